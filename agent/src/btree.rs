//! B-tree maps and sets built by insertion. `collect()` into a `BTreeMap`/`BTreeSet` first sorts
//! its items with a stable sort instantiated anew for every element type (about 6 KB of code
//! each in the image); insertion reuses `insert`, which the agent instantiates anyway. Equal
//! keys behave as with `collect()`: the last value stays.
use alloc::collections::{BTreeMap, BTreeSet};

pub fn map<K: Ord, V>(items: impl IntoIterator<Item = (K, V)>) -> BTreeMap<K, V> {
    let mut m = BTreeMap::new();
    for (k, v) in items {
        m.insert(k, v);
    }
    m
}

pub fn set<T: Ord>(items: impl IntoIterator<Item = T>) -> BTreeSet<T> {
    let mut s = BTreeSet::new();
    for t in items {
        s.insert(t);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_as_collect() {
        let pairs = [(3, "a"), (1, "b"), (3, "c"), (2, "d")];
        assert_eq!(map(pairs), pairs.into_iter().collect::<BTreeMap<_, _>>());
        assert_eq!(set([5, 1, 5, 3]), [5, 1, 5, 3].into_iter().collect::<BTreeSet<_>>());
    }
}
