//! Writes the seed corpus: valid inputs made by the encoders themselves and
//! invalid ones derived from them (truncated, flipped, wrong version, ...).
//! Run it after a format change, then commit `fuzz/corpus/`:
//!
//! ```text
//! cargo test -p fuzz-targets --test seeds -- --ignored
//! ```
//!
//! It only adds or overwrites its own named files (`seed-*`); files
//! libFuzzer or a crash added stay.

use std::path::Path;

use fsm_core::store::{
    ActionRecord, DesiredDocument, NodeIdentity, ObservedDocument, codec as store_codec,
};
use fsm_core::{ChildSpec, DesiredState, NodePath, RestartPolicy, Value, codec};

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join(format!("seed-{name}")), data).unwrap_or_else(|e| panic!("{e}"));
}

/// The valid inputs and, for each, a few broken copies.
fn write_with_variants(target: &str, name: &str, data: &[u8]) {
    write(target, name, data);
    if data.len() > 2 {
        write(
            target,
            &format!("{name}-truncated"),
            &data[..data.len() / 2],
        );
        let mut flipped = data.to_vec();
        let at = data.len() * 2 / 3;
        flipped[at] ^= 0x5a;
        write(target, &format!("{name}-flipped"), &flipped);
    }
}

fn specs() -> Vec<(&'static str, ChildSpec)> {
    vec![
        ("minimal", ChildSpec::new("a", "t")),
        (
            "full",
            ChildSpec::new("press", "modbus")
                .with_spec(Value::map([
                    ("host", Value::from("{{ IP }}")),
                    ("port", Value::from(502)),
                    ("ratio", Value::Float(0.25)),
                    (
                        "tags",
                        Value::List(vec![Value::from("a"), Value::Null, Value::Bool(true)]),
                    ),
                ]))
                .map_state("running", "running")
                .map_state("stopped", "stopped")
                .with_restart(RestartPolicy::Transient)
                .with_variable("IP", "10.0.0.5")
                .with_location("line", "line-1"),
        ),
        (
            "unicode",
            ChildSpec::new("pömpe-\u{1F680}", "w\"q").with_spec(Value::from("é\\\n\u{0}")),
        ),
        (
            "nested",
            ChildSpec::new("n", "t").with_spec((0..40).fold(Value::Int(i64::MIN), |v, i| {
                if i % 2 == 0 {
                    Value::List(vec![v])
                } else {
                    Value::map([("k", v)])
                }
            })),
        ),
    ]
}

fn desired() -> DesiredState {
    DesiredState::new("running").with_children(specs().into_iter().map(|(_, s)| s))
}

#[test]
#[ignore = "writes fuzz/corpus; run by hand after a format change"]
fn write_the_seed_corpus() {
    // spec_json
    for (name, spec) in specs() {
        let json = serde_json::to_string(&spec).unwrap_or_default();
        write_with_variants("spec_json", &format!("child-{name}.json"), json.as_bytes());
        let pretty = serde_json::to_string_pretty(&spec).unwrap_or_default();
        write(
            "spec_json",
            &format!("child-{name}-pretty.json"),
            pretty.as_bytes(),
        );
    }
    let json = serde_json::to_string(&desired()).unwrap_or_default();
    write_with_variants("spec_json", "desired.json", json.as_bytes());
    for (name, text) in [
        (
            "unknown-field",
            r#"{"name":"a","worker_type":"t","state_maping":{}}"#,
        ),
        ("missing-type", r#"{"name":"a"}"#),
        ("wrong-type", r#"{"name":1,"worker_type":"t"}"#),
        (
            "big-numbers",
            r#"{"name":"a","worker_type":"t","user_spec":[18446744073709551615,-9223372036854775808,1e308,-0.0,5e-324]}"#,
        ),
        (
            "duplicate-key",
            r#"{"name":"a","name":"b","worker_type":"t"}"#,
        ),
        ("desired-unknown", r#"{"state":"s","chidlren":[]}"#),
        (
            "desired-supervision",
            r#"{"state":"s","children":[],"supervision":{"strategy":"rest_for_one"}}"#,
        ),
        (
            "restart",
            r#"{"name":"a","worker_type":"t","restart":"temporary"}"#,
        ),
        (
            "escapes",
            r#"{"name":"\ud83d\ude80\u0000","worker_type":"\"t\\"}"#,
        ),
        (
            "deep",
            &format!(
                r#"{{"name":"a","worker_type":"t","user_spec":{}1{}}}"#,
                "[".repeat(300),
                "]".repeat(300)
            ),
        ),
        ("empty", ""),
        ("null", "null"),
    ] {
        write("spec_json", name, text.as_bytes());
    }

    // codec
    for (name, spec) in specs() {
        let bytes = codec::encode_spec(&spec).unwrap_or_default();
        write_with_variants("codec", &format!("spec-{name}"), &bytes);
    }
    let bytes = codec::encode_desired(&desired()).unwrap_or_default();
    write_with_variants("codec", "desired", &bytes);
    let spec = codec::encode_spec(&ChildSpec::new("a", "t")).unwrap_or_default();
    let mut version = spec.clone();
    version[3] = codec::FORMAT_VERSION + 1;
    write("codec", "future-version", &version);
    write("codec", "trailing", &[&spec[..], &[0][..]].concat());
    write("codec", "no-header", b"nope");
    let header = [&b"FSM"[..], &[codec::FORMAT_VERSION]].concat();
    write("codec", "header-only", &header);
    write(
        "codec",
        "huge-length",
        &[&header[..], b"\xfd\xff\xff\xff\xff\xff\xff\xff\x7f"].concat(),
    );
    let deep: Vec<u8> = [&header[..], &[5u8, 1].repeat(300), &[0][..]].concat();
    write("codec", "deep-value", &deep);
    write(
        "codec",
        "value-float",
        &codec::encode("value", &Value::Float(f64::NAN)).unwrap_or_default(),
    );

    // store_record
    let path = NodePath::parse("plant/line-1");
    let records: Vec<(&str, Vec<u8>)> = vec![
        (
            "identity",
            store_codec::encode(&path, &NodeIdentity::new(path.clone(), "line"))
                .unwrap_or_default(),
        ),
        (
            "desired",
            store_codec::encode(
                &path,
                &DesiredDocument {
                    spec: specs()[1].1.clone(),
                    generation: 7,
                },
            )
            .unwrap_or_default(),
        ),
        (
            "observed",
            store_codec::encode(
                &path,
                &ObservedDocument {
                    state: "running".to_owned(),
                    observed_at_ms: Some(1_764_000_000_000),
                    restarts: 3,
                    last_error: Some("refused".to_owned()),
                    last_action: None,
                    backoff_attempt: 2,
                },
            )
            .unwrap_or_default(),
        ),
        (
            "observed-empty",
            store_codec::encode(&path, &ObservedDocument::default()).unwrap_or_default(),
        ),
        (
            "action",
            store_codec::encode(
                &path,
                &ActionRecord::started(path.clone(), "connect", u64::MAX, 5),
            )
            .unwrap_or_default(),
        ),
    ];
    for (name, bytes) in records {
        write_with_variants("store_record", name, &bytes);
        let mut other = bytes.clone();
        other[0] = 2;
        write("store_record", &format!("{name}-other-format"), &other);
    }
    write("store_record", "empty", b"");
    write("store_record", "format-only", b"\x01");
    write("store_record", "garbage", b"not a record at all");

    // snapshot_json
    let leaf = |path: &str, name: &str| {
        format!(
            r#"{{"path":"{path}","name":"{name}","worker_type":"w","state":"running","desired_state":"running","healthy":true,"last_error":null,"converged":true,"stale":false,"state_reason":"","ticks":3,"collect_failures":0,"last_collect_error":null,"action_in_flight":null,"last_action":null,"restarts":0,"generation":1,"observed_generation":1,"restarting":null,"circuit_open":false,"in_state_for_ms":10,"location_path":"","restored":null,"children":[]}}"#
        )
    };
    let one = leaf("plant", "plant");
    write_with_variants("snapshot_json", "leaf.json", one.as_bytes());
    let two = one.replace(
        r#""children":[]"#,
        &format!(
            r#""children":[{},{}]"#,
            leaf("plant/a", "a"),
            leaf("plant/b", "b")
        ),
    );
    write_with_variants("snapshot_json", "children.json", two.as_bytes());
    let tricky = leaf("plant/x", "x").replace(
        r#""last_error":null"#,
        r#""last_error":"a \"children\":[ { } ] \\ é""#,
    );
    write("snapshot_json", "tricky-strings.json", tricky.as_bytes());
    let mut deep = leaf("d", "d");
    for i in 0..80 {
        deep = leaf(&format!("d{i}"), "d")
            .replace(r#""children":[]"#, &format!(r#""children":[{deep}]"#));
    }
    write("snapshot_json", "deep.json", deep.as_bytes());
    if let Ok(parsed) = serde_json::from_str::<serde_json::Value>(&two) {
        let pretty = serde_json::to_string_pretty(&parsed).unwrap_or_default();
        write("snapshot_json", "children-pretty.json", pretty.as_bytes());
    }
    for (name, text) in [
        (
            "children-not-array",
            one.replace(r#""children":[]"#, r#""children":{}"#),
        ),
        (
            "child-not-object",
            one.replace(r#""children":[]"#, r#""children":[1]"#),
        ),
        ("trailing", format!("{one} x")),
        (
            "children-first",
            one.replace(r#"{"path""#, r#"{"children":[],"path""#)
                .replace(r#","children":[]}"#, "}"),
        ),
        ("no-children", one.replace(r#","children":[]"#, "")),
        ("empty", String::new()),
        ("array", "[]".to_owned()),
        ("unbalanced", "{\"children\":[{]}".to_owned()),
    ] {
        write("snapshot_json", name, text.as_bytes());
    }

    // relay_response: status (2 bytes, big-endian), then the body.
    let with = |status: u16, body: &str| [&status.to_be_bytes()[..], body.as_bytes()].concat();
    for (name, status, body) in [
        (
            "pull",
            200,
            r#"{"UMHMessages":[{"umhInstance":"u-1","content":"hi","email":"a@b"}]}"#,
        ),
        (
            "pull-trace",
            200,
            r#"{"UMHMessages":[{"umhInstance":"u","content":"","email":"","traceId":"t-1"},{"umhInstance":"u","content":"\u00e9","email":"x"}]}"#,
        ),
        ("pull-empty", 200, r#"{"UMHMessages":[]}"#),
        ("pull-null", 200, r#"{"UMHMessages":null}"#),
        ("pull-wrong", 200, r#"{"messages":[]}"#),
        ("login", 200, r#"{"uuid":"0b9e-1","name":"plant-a"}"#),
        ("login-missing", 200, r#"{"uuid":"0b9e-1"}"#),
        ("no-content", 204, ""),
        ("rate-limited", 429, "120"),
        ("rate-limited-date", 429, "Wed, 21 Oct 2015 07:28:00 GMT"),
        (
            "challenge",
            429,
            "<!DOCTYPE html><title>Just a moment...</title>",
        ),
        (
            "proxy-block",
            200,
            "<html><body>Access Denied by Zscaler</body></html>",
        ),
        ("forbidden", 403, "invalid token"),
        ("deleted", 404, ""),
        ("server", 503, "{\"error\":\"down\"}"),
        (
            "jwt",
            200,
            "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjE3NjQwMDAwMDB9.sig",
        ),
        ("jwt-float", 200, "x.eyJleHAiOjEuNWUzMDh9.y"),
        ("retry-huge", 503, "18446744073709551615"),
    ] {
        write("relay_response", name, &with(status, body));
    }
    write("relay_response", "short", b"\x00");

    // templates: the variables (see `Bytes`), then the text. Names are
    // indexes into its list: 0 IP, 1 PORT, 2 x, 3 name, 4 global.
    let mut ip_port = vec![2u8, 0, 4, 8];
    ip_port.extend_from_slice(b"10.0.0.5");
    ip_port.extend_from_slice(&[1, 2]);
    ip_port.extend_from_slice(&502i64.to_le_bytes());
    ip_port.push(0); // no globals
    let list_var = [
        3u8, 2, 5, 3, 4, 1, b'a', 2, 7, 0, 0, 0, 0, 0, 0, 0, 1, 1, 3, 6, 2, 0, 4, 1, b'z', 1, 0, 1,
        0, 4, 3, b'g', b'l', b'o',
    ];
    for (name, vars, text) in [
        ("address", &ip_port[..], "{{ IP }}:{{ PORT }}"),
        ("single", &ip_port[..], "{{ PORT }}"),
        ("single-spaces", &ip_port[..], "  {{PORT}} "),
        ("missing", &ip_port[..], "{{ GATEWAY }}"),
        (
            "filters",
            &ip_port[..],
            "{{ IP | upper }}/{{ IP | replace: \".\", \"/\" }}",
        ),
        ("json", &list_var[..], "{{ x | json }} {{ name | json }}"),
        ("member", &list_var[..], "{{ name.a }}-{{ global.IP }}"),
        ("internal", &ip_port[..], "{{ internal.path }}"),
        (
            "if",
            &ip_port[..],
            "{% if PORT %}on{% else %}off{% endif %}",
        ),
        (
            "for",
            &list_var[..],
            "{% for v in x %}[{{ v }}]{% endfor %}",
        ),
        ("comment", &ip_port[..], "{# note #}{{ IP }}"),
        ("unclosed", &ip_port[..], "{{ IP "),
        ("bad-block", &ip_port[..], "{% endfor %}"),
        ("plain", &ip_port[..], "no templates here { } }}"),
        ("no-vars", &[0u8, 0][..], "{{ }}"),
        ("raw", &ip_port[..], "{{ IP }}{{{{"),
    ] {
        write("templates", name, &[vars, text.as_bytes()].concat());
    }
    write("templates", "empty", b"");
}
