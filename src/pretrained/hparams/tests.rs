use super::*;

fn hp(yaml: &str) -> Hparams {
    Hparams::from_str(yaml, "test.yaml", None).unwrap()
}

#[test]
fn scalars_follow_yaml_1_2() {
    let h = hp("a: 1\nb: 1.5\nc: 1e-3\nd: true\ne: True\nf: null\ng: hello\nh: '3'\ni: -2\nj: .5\nk: 1_000\n");
    assert_eq!(h.get("a"), Some(&Value::Int(1)));
    assert_eq!(h.get("b"), Some(&Value::Float(1.5)));
    assert_eq!(h.get("c"), Some(&Value::Float(1e-3)));
    assert_eq!(h.get("d"), Some(&Value::Bool(true)));
    assert_eq!(h.get("e"), Some(&Value::Bool(true)));
    assert_eq!(h.get("f"), Some(&Value::Null));
    assert_eq!(h.get("g"), Some(&Value::Str("hello".into())));
    assert_eq!(h.get("h"), Some(&Value::Str("3".into())));
    assert_eq!(h.get("i"), Some(&Value::Int(-2)));
    assert_eq!(h.get("j"), Some(&Value::Float(0.5)));
    assert_eq!(h.get("k"), Some(&Value::Int(1000)));
}

#[test]
fn implicit_tuples() {
    let h = hp("t: (128, 256)\nq: '(1, 2)'\n");
    assert_eq!(
        h.get("t"),
        Some(&Value::Tuple(vec![Value::Int(128), Value::Int(256)]))
    );
    assert_eq!(h.get("q"), Some(&Value::Str("(1, 2)".into())));
}

#[test]
fn refs_arithmetic_and_interpolation() {
    let h = hp(concat!(
        "a: 4\nb: 2.5\nroot: /data\nname: x\n",
        "m: !ref <a> * <b>\n",
        "d: !ref <a> / 8\n",
        "fd: !ref <a> // 3\n",
        "p: !ref (<a> + 1) ** 2\n",
        "path: !ref <root>/<name>/train.json\n",
        "same: !ref <a>\n",
        "nested: {x: {y: 7}}\n",
        "deep: !ref <nested[x][y]>\n",
        "neg: !ref -<a>\n",
    ));
    assert_eq!(h.get("m"), Some(&Value::Float(10.0)));
    assert_eq!(h.get("d"), Some(&Value::Float(0.5)));
    assert_eq!(h.get("fd"), Some(&Value::Int(1)));
    assert_eq!(h.get("p"), Some(&Value::Int(25)));
    assert_eq!(h.get("path").unwrap().as_str(), Some("/data/x/train.json"));
    assert_eq!(h.get("same"), Some(&Value::Int(4)));
    assert_eq!(h.get("deep"), Some(&Value::Int(7)));
    // HyperPyYAML's evaluator has no unary minus: the result stays a string.
    assert_eq!(h.get("neg").unwrap().as_str(), Some("-4"));
}

#[test]
fn objects_share_ids_and_copies_do_not() {
    let h = hp(concat!(
        "enc: !new:torch.nn.Linear\n  in_features: 3\n  out_features: 4\n",
        "mods:\n  encoder: !ref <enc>\n  copy: !copy <enc>\n",
        "lst: !new:torch.nn.ModuleList\n  - [!ref <enc>]\n",
        "act: !name:torch.nn.LeakyReLU\n",
        "empty: !new:sentencepiece.SentencePieceProcessor\n",
    ));
    let enc = h.get("enc").unwrap().as_new().unwrap();
    assert_eq!(enc.short_name(), "Linear");
    assert_eq!(enc.id.as_deref(), Some("enc"));
    assert_eq!(enc.kwarg("out_features"), Some(&Value::Int(4)));
    assert_eq!(
        h.get("mods[encoder]")
            .unwrap()
            .as_new()
            .unwrap()
            .id
            .as_deref(),
        Some("enc")
    );
    assert_eq!(h.get("mods[copy]").unwrap().as_new().unwrap().id, None);
    let lst = h.get("lst").unwrap().as_new().unwrap();
    assert_eq!(lst.args.len(), 1);
    assert_eq!(
        lst.args[0].as_list().unwrap()[0]
            .as_new()
            .unwrap()
            .id
            .as_deref(),
        Some("enc")
    );
    assert!(matches!(h.get("act"), Some(Value::Name(o)) if o.class == "torch.nn.LeakyReLU"));
    assert!(h.get("empty").unwrap().as_new().unwrap().kwargs.is_empty());
}

#[test]
fn overrides_merge_before_resolution() {
    let yaml = "n: 2\nm: !ref <n> * 10\nmodel: !new:a.B\n  size: !ref <m>\n  other: 1\n";
    let h = Hparams::from_str(yaml, "t.yaml", Some("n: 5\nmodel:\n  other: 3\n")).unwrap();
    assert_eq!(h.get("m"), Some(&Value::Int(50)));
    // A tagged node is replaced whole by an override mapping (it is not a plain mapping).
    assert_eq!(
        h.get("model").unwrap().as_map().unwrap().get("other"),
        Some(&Value::Int(3))
    );
    let h = Hparams::from_str("a: !PLACEHOLDER\nb: !ref <a>\n", "t.yaml", Some("a: 3")).unwrap();
    assert_eq!(h.get("b"), Some(&Value::Int(3)));
}

#[test]
fn errors_name_the_file_key_and_problem() {
    let e = Hparams::from_str("a: !ref <missing>\n", "m.yaml", None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("m.yaml") && e.contains("`a`") && e.contains("missing"),
        "{e}"
    );
    let e = Hparams::from_str("a: 1\nb: !foo bar\n", "t.yaml", None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown tag `!foo`") && e.contains("`b`") && e.contains("line 2"),
        "{e}"
    );
    let e = Hparams::from_str("a: !ref <b>\nb: !ref <a>\n", "c.yaml", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("circular"), "{e}");
    let e = Hparams::from_str("a: !PLACEHOLDER\n", "p.yaml", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("PLACEHOLDER"), "{e}");
    // A string value holding its own reference used to recurse until the stack overflowed.
    let e = Hparams::from_str("n: x <n> * 2\nb: !ref <n>)\n", "r.yaml", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("r.yaml") && e.contains("rounds"), "{e}");
    let e = Hparams::from_str("a: [1, 2\n", "s.yaml", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("s.yaml") && e.contains("YAML"), "{e}");
}

#[test]
fn python_str_of_floats() {
    assert_eq!(python_float_repr(1e-5), "1e-05");
    assert_eq!(python_float_repr(0.5), "0.5");
    assert_eq!(python_float_repr(100.0), "100.0");
    assert_eq!(python_float_repr(1e16), "1e+16");
    assert_eq!(python_float_repr(0.0001), "0.0001");
}
