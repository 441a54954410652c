//! `config/node.example.toml` parses and documents exactly the defaults.

#[test]
fn example_config_matches_the_defaults() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/node.example.toml")).unwrap();
    let parsed: ringkv_node::Config = toml::from_str(&text).unwrap();
    let want = ringkv_node::Config::default();
    assert_eq!(format!("{parsed:?}"), format!("{want:?}"));
    // Every field is documented in the example, set or commented out.
    let fields = toml::Value::try_from(&want).unwrap();
    for field in fields.as_table().unwrap().keys() {
        assert!(text.contains(&format!("{field} =")), "config/node.example.toml does not mention {field}");
    }
}
