//! RFC 8785 canonical JSON and the job hash against independent vectors.

use super::root;
use gavel::canonical::{parse_strict, to_jcs};
use gavel::job::{Job, Limits};
use serde_json::Value;

fn jcs_of(text: &str) -> String {
    to_jcs(&parse_strict(text.as_bytes(), 64).expect("valid JSON"))
}

#[test]
fn rfc8785_section_3_2_2_example() {
    let input = r#"{
        "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
        "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
        "literals": [null, true, false]
    }"#;
    assert_eq!(
        jcs_of(input),
        "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],\"string\":\"€$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}"
    );
}

#[test]
fn rfc8785_section_3_2_3_sorting_by_utf16_code_units() {
    let input = r#"{
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\ud83d\ude00": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis"
    }"#;
    assert_eq!(
        jcs_of(input),
        concat!(
            "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",",
            "\"ö\":\"Latin Small Letter O With Diaeresis\",\"€\":\"Euro Sign\",",
            "\"😀\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}"
        ),
        "emoji (UTF-16 D83D) sorts before U+FB33"
    );
}

/// RFC 8785 Appendix B: IEEE 754 bit patterns and their serialisation.
#[test]
fn rfc8785_appendix_b_numbers() {
    let cases: &[(u64, &str)] = &[
        (0x0000000000000000, "0"),
        (0x8000000000000000, "0"),
        (0x0000000000000001, "5e-324"),
        (0x8000000000000001, "-5e-324"),
        (0x7fefffffffffffff, "1.7976931348623157e+308"),
        (0xffefffffffffffff, "-1.7976931348623157e+308"),
        (0x4340000000000000, "9007199254740992"),
        (0xc340000000000000, "-9007199254740992"),
        (0x4430000000000000, "295147905179352830000"),
        (0x44b52d02c7e14af5, "9.999999999999997e+22"),
        (0x44b52d02c7e14af6, "1e+23"),
        (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
        (0x444b1ae4d6e2ef4e, "999999999999999700000"),
        (0x444b1ae4d6e2ef4f, "999999999999999900000"),
        (0x444b1ae4d6e2ef50, "1e+21"),
        (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
        (0x3eb0c6f7a0b5ed8d, "0.000001"),
        (0x41b3de4355555553, "333333333.3333332"),
        (0x41b3de4355555554, "333333333.33333325"),
        (0x41b3de4355555555, "333333333.3333333"),
        (0x41b3de4355555556, "333333333.3333334"),
        (0x41b3de4355555557, "333333333.33333343"),
        (0xbecbf647612f3696, "-0.0000033333333333333333"),
        (0x43143ff3c1cb0959, "1424953923781206.2"),
    ];
    for &(bits, want) in cases {
        let v = Value::from(f64::from_bits(bits));
        assert_eq!(to_jcs(&v), want, "{bits:016x}");
    }
    // NaN and infinities are not JSON: they cannot even become a Value.
    assert!(serde_json::Number::from_f64(f64::NAN).is_none());
}

#[test]
fn job_hashes_match_an_independent_implementation() {
    let text =
        std::fs::read_to_string(root().join("tests/fixtures/job_hash_vectors.json")).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    let vectors = file["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 8);
    for v in vectors {
        let job =
            Job::from_json(v["job"].as_str().unwrap().as_bytes(), &Limits::default()).unwrap();
        assert_eq!(
            job.canonical_json(),
            v["canonical"].as_str().unwrap(),
            "{}",
            v["job"]
        );
        assert_eq!(
            job.hash().as_str(),
            v["hash"].as_str().unwrap(),
            "{}",
            v["job"]
        );
    }
}

fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let key = prop_oneof![
        "[a-z]{0,3}",
        "[\\u{0}-\\u{7f}]{0,3}",
        "[é€😀\u{fb33}\u{e000}\u{ffff}\u{10000}a\r]{0,3}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-(1i64 << 53)..(1i64 << 53)).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop_oneof![
            Just(1e21),
            Just(1e-7),
            Just(-0.0),
            Just(5e-324),
            Just(0.1),
            Just(1e23)
        ]
        .prop_map(Value::from),
        "[\\u{0}-\\u{7f}é€😀\u{2028}\"\\\\]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// gavel's canonical writer and the serde_json_canonicalizer crate agree
    /// byte for byte.
    #[test]
    fn canonical_writer_matches_the_jcs_crate(v in json_value()) {
        let ours = to_jcs(&v);
        let theirs = serde_json_canonicalizer::to_string(&v).unwrap();
        proptest::prop_assert_eq!(ours, theirs);
    }

    /// A job's canonical form written field by field equals the JCS crate's
    /// rendering of the documented canonical document.
    #[test]
    fn job_canonical_form_matches_the_jcs_crate(params in json_value(), attrs in proptest::collection::btree_map("[a-z\u{e000}😀]{1,3}", -1000i64..1000, 0..4), cost in proptest::option::of(-1e9f64..1e9)) {
        let params = match params { Value::Object(m) => Value::Object(m), other => serde_json::json!({ "v": other }) };
        let text = serde_json::json!({
            "topic": "t", "action": "a", "target": "x", "tenant": "acme",
            "risk_tags": ["b", "a", "\u{e000}", "😀"],
            "attributes": attrs,
            "params": params,
            "proposal": { "title": "T", "estimated_cost_usd": cost },
        }).to_string();
        let job = Job::from_json(text.as_bytes(), &Limits::default()).unwrap();
        let theirs = serde_json_canonicalizer::to_string(&job.canonical_value()).unwrap();
        proptest::prop_assert_eq!(job.canonical_json(), theirs);
    }
}

/// The gRPC door reads numbers as doubles, the JSON doors as text: a job
/// with a large integral double is the same job, with the same hash,
/// through both, and its canonical form reads back (both found by the
/// `grpc_decode` fuzz target).
#[test]
fn grpc_and_json_doors_agree_on_large_and_tiny_doubles() {
    use gavel::proto::v1 as pb;
    let limits = Limits::default();
    for (double, text) in [
        (-6.629298664374272e18, "-6629298664374272000"),
        (1.3191472680134927e-226, "1.3191472680134927e-226"),
        (1e21, "1e+21"),
    ] {
        let wire = pb::Job {
            job_id: "j-1".into(),
            action: "deploy".into(),
            params: Some(prost_types::Struct {
                fields: [(
                    "n".to_owned(),
                    prost_types::Value {
                        kind: Some(prost_types::value::Kind::NumberValue(double)),
                    },
                )]
                .into(),
            }),
            proposal: Some(pb::Proposal {
                estimated_cost_usd: Some(double),
                ..Default::default()
            }),
            ..Default::default()
        };
        let by_grpc = Job::from_input(gavel::wire::job_input(Some(wire)).unwrap(), &limits)
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        let json = format!(
            r#"{{"job_id":"j-1","action":"deploy","params":{{"n":{text}}},"proposal":{{"estimated_cost_usd":{text}}}}}"#
        );
        let by_json =
            Job::from_json(json.as_bytes(), &limits).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(by_grpc.hash(), by_json.hash(), "{text}");
        assert!(by_grpc.canonical_json().contains(text), "{text}");
        let again = Job::from_json(by_grpc.canonical_json().as_bytes(), &limits).unwrap();
        assert_eq!(again.hash(), by_grpc.hash(), "{text}");
    }
    // An integer no double is exactly stays refused on the JSON door.
    let err = Job::from_json(
        br#"{"job_id":"j-1","action":"deploy","params":{"n":9007199254740993}}"#,
        &limits,
    )
    .unwrap_err();
    assert!(err.to_string().contains("2^53"), "{err}");
}
