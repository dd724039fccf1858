//! Property tests of the portable core: printing and parsing are inverse, the NAR parser
//! accepts exactly what the serializer writes, in any chunking, and the Evidence payload parser
//! accepts exactly what `evidence_payload` writes.
use agent::nix::derivation::{self, Derivation, Output};
use agent::nix::nar::{self, Limits, Tree};
use agent::proto::{self, AttestationKind};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

fn store_path() -> impl Strategy<Value = String> {
    ("[0-9a-df-np-sv-z]{32}", "[a-zA-Z0-9+._?=-]{1,20}").prop_map(|(h, n)| format!("/nix/store/{h}-{n}"))
}

fn any_string() -> impl Strategy<Value = String> {
    prop_oneof![".*", "[\"\\\\\n\r\t a-z]*", Just(String::new())]
}

fn drv() -> impl Strategy<Value = Derivation> {
    (
        prop::collection::btree_map("[a-z]{1,8}", store_path(), 1..4),
        prop::collection::btree_map(store_path(), prop::collection::btree_set("[a-z]{1,5}", 1..3), 0..3),
        prop::collection::btree_set(store_path(), 0..3),
        any_string(),
        prop::collection::vec(any_string(), 0..4),
        prop::collection::btree_map("[a-zA-Z_]{1,10}", any_string(), 0..6),
    )
        .prop_map(|(outs, input_drvs, input_srcs, builder, args, env)| Derivation {
            outputs: outs.into_iter().map(|(n, p)| (n, Output { path: p, hash_algo: String::new(), hash: String::new() })).collect(),
            input_drvs: input_drvs.into_iter().collect::<BTreeMap<String, BTreeSet<String>>>(),
            input_srcs,
            platform: "x86_64-linux".into(),
            builder,
            args,
            env,
        })
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        (any::<bool>(), prop::collection::vec(any::<u8>(), 0..300)).prop_map(|(x, c)| Tree::File { executable: x, contents: c }),
        prop::collection::vec(1u8..=255, 1..40).prop_map(Tree::Symlink),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop::collection::btree_map("[a-zA-Z0-9._-]{1,12}", inner, 0..6).prop_map(|m| {
            Tree::Directory(m.into_iter().filter(|(k, _)| k != "." && k != "..").map(|(k, v)| (k.into_bytes(), v)).collect())
        })
    })
}

proptest! {
    #[test]
    fn aterm_print_parse_round_trip(d in drv()) {
        let text = derivation::print(&d);
        let parsed = derivation::parse(text.as_bytes()).unwrap();
        prop_assert_eq!(&parsed, &d);
        prop_assert_eq!(derivation::print(&parsed), text);
    }

    #[test]
    fn aterm_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = derivation::parse(&bytes);
        let mut s = b"Derive([".to_vec();
        s.extend_from_slice(&bytes);
        let _ = derivation::parse(&s);
    }

    #[test]
    fn nar_round_trip_in_any_chunking(t in tree(), chunk in 1usize..64) {
        let bytes = t.to_nar();
        struct Chunks<'a>(&'a [u8], usize);
        impl nar::Read for Chunks<'_> {
            type Error = ();
            fn read(&mut self, buf: &mut [u8]) -> Result<usize, ()> {
                let n = self.1.min(buf.len()).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut b = nar::TreeBuilder::default();
        nar::parse(&mut Chunks(&bytes, chunk), &mut b, Limits::default()).unwrap();
        prop_assert_eq!(b.root.as_ref(), Some(&t));
        prop_assert_eq!(Tree::from_nar(&bytes, Limits::default()).unwrap().to_nar(), bytes);
    }

    #[test]
    fn nar_parser_rejects_or_accepts_mutations_without_panicking(t in tree(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = t.to_nar();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        if let Ok(parsed) = Tree::from_nar(&bytes, Limits::default()) {
            // Anything accepted is canonical: it serialises back to the same bytes.
            prop_assert_eq!(parsed.to_nar(), bytes);
        }
    }

    #[test]
    fn evidence_payload_round_trip(
        kind in prop_oneof![Just(AttestationKind::None), Just(AttestationKind::SevSnp), Just(AttestationKind::Tdx)],
        report in prop::collection::vec(any::<u8>(), 0..2000),
        certs in prop::collection::vec((any::<[u8; 16]>(), prop::collection::vec(any::<u8>(), 0..300)), 0..=proto::MAX_EVIDENCE_CERTIFICATES),
    ) {
        let p = proto::evidence_payload(kind, &report, &certs);
        prop_assert_eq!(proto::parse_evidence(&p), Ok(proto::EvidencePayload { kind, report, certificates: certs }));
    }

    #[test]
    fn evidence_parser_accepts_only_canonical_payloads(
        report in prop::collection::vec(any::<u8>(), 0..200),
        certs in prop::collection::vec((any::<[u8; 16]>(), prop::collection::vec(any::<u8>(), 0..40)), 0..4),
        pos in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut p = proto::evidence_payload(AttestationKind::SevSnp, &report, &certs);
        let i = pos.index(p.len());
        p[i] = byte;
        p.truncate(1 + cut.index(p.len()));
        if let Ok(e) = proto::parse_evidence(&p) {
            // Anything accepted is what the encoder writes for what was parsed: no slack anywhere.
            prop_assert_eq!(proto::evidence_payload(e.kind, &e.report, &e.certificates), p);
        }
    }
}
