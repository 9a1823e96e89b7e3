//! `CNI_*` environment validation and `CNI_ARGS`.

use plexus_cni::args::ArgsError;
use plexus_cni::{CniArgs, CniEnv, Command, codes};
use proptest::prelude::*;
use rstest::rstest;
use std::collections::HashMap;
use std::path::PathBuf;

fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

fn full_add() -> Vec<(&'static str, &'static str)> {
    vec![
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0"),
        ("CNI_PATH", "/opt/cni/bin::/usr/lib/cni"),
    ]
}

fn with(
    mut vars: Vec<(&'static str, &'static str)>,
    key: &'static str,
    value: Option<&'static str>,
) -> Vec<(&'static str, &'static str)> {
    vars.retain(|(k, _)| *k != key);
    if let Some(value) = value {
        vars.push((key, value));
    }
    vars
}

fn env_error(vars: &[(&str, &str)]) -> plexus_cni::CniError {
    CniEnv::from_lookup(lookup(vars)).unwrap_err()
}

#[test]
fn full_add_environment_parses() {
    let env = CniEnv::from_lookup(lookup(&full_add())).unwrap();
    assert_eq!(env.command, Command::Add);
    assert_eq!(env.container_id, "abc123");
    assert_eq!(env.netns, Some(PathBuf::from("/run/netns/x")));
    assert_eq!(env.ifname, "eth0");
    assert_eq!(env.args.get(CniArgs::POD_NAME), Some("web-0"));
    assert_eq!(
        env.path,
        vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
    );
}

#[rstest]
#[case::no_command(None)]
#[case::empty_command(Some(""))]
fn missing_command_is_code_4(#[case] value: Option<&'static str>) {
    let err = env_error(&with(full_add(), "CNI_COMMAND", value));
    assert_eq!(err.code, codes::INVALID_ENVIRONMENT);
    assert!(err.msg.contains("CNI_COMMAND"), "{}", err.msg);
}

#[rstest]
#[case("add")]
#[case("DELETE")]
#[case("ADD ")]
fn unknown_command_names_the_value(#[case] value: &'static str) {
    let err = env_error(&with(full_add(), "CNI_COMMAND", Some(value)));
    assert_eq!(err.code, codes::INVALID_ENVIRONMENT);
    assert!(err.msg.contains(&format!("{value:?}")), "{}", err.msg);
}

#[rstest]
#[case("ADD", "CNI_CONTAINERID")]
#[case("ADD", "CNI_NETNS")]
#[case("ADD", "CNI_IFNAME")]
#[case("CHECK", "CNI_CONTAINERID")]
#[case("CHECK", "CNI_NETNS")]
#[case("CHECK", "CNI_IFNAME")]
#[case("DEL", "CNI_CONTAINERID")]
#[case("DEL", "CNI_IFNAME")]
fn each_missing_var_is_named(#[case] command: &'static str, #[case] var: &'static str) {
    let vars = with(with(full_add(), "CNI_COMMAND", Some(command)), var, None);
    let err = env_error(&vars);
    assert_eq!(err.code, codes::INVALID_ENVIRONMENT);
    assert_eq!(
        err.msg,
        format!("required environment variables missing: {var}")
    );
}

#[test]
fn all_missing_vars_are_named_in_one_error() {
    let err = env_error(&[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_IFNAME", ""),
    ]);
    assert_eq!(err.code, codes::INVALID_ENVIRONMENT);
    assert_eq!(
        err.msg,
        "required environment variables missing: CNI_NETNS, CNI_IFNAME"
    );
}

#[test]
fn del_does_not_need_netns() {
    let env = CniEnv::from_lookup(lookup(&with(
        with(full_add(), "CNI_COMMAND", Some("DEL")),
        "CNI_NETNS",
        None,
    )))
    .unwrap();
    assert_eq!(env.command, Command::Del);
    assert_eq!(env.netns, None);
}

#[rstest]
#[case("VERSION")]
#[case("STATUS")]
#[case("GC")]
fn non_attachment_verbs_need_only_the_command(#[case] command: &'static str) {
    let env = CniEnv::from_lookup(lookup(&[("CNI_COMMAND", command)])).unwrap();
    assert_eq!(env.command.as_str(), command);
    assert!(
        env.container_id.is_empty()
            && env.ifname.is_empty()
            && env.netns.is_none()
            && env.path.is_empty()
    );
    // Attachment parameters, even malformed ones, are not looked at.
    let noisy = [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "-bad"),
        ("CNI_IFNAME", "a/b"),
        ("CNI_ARGS", "junk"),
        ("CNI_PATH", "/bin"),
    ];
    let env = CniEnv::from_lookup(lookup(&noisy)).unwrap();
    assert!(env.container_id.is_empty() && env.ifname.is_empty() && env.args.0.is_empty());
    assert_eq!(env.path, vec![PathBuf::from("/bin")]);
}

#[rstest]
#[case("-leading-dash")]
#[case("_leading")]
#[case(".leading")]
#[case("has space")]
#[case("has/slash")]
#[case("ünicode")]
#[case("semi;colon")]
fn bad_container_id_is_code_4(#[case] id: &'static str) {
    let err = env_error(&with(full_add(), "CNI_CONTAINERID", Some(id)));
    assert_eq!(err.code, codes::INVALID_ENVIRONMENT);
    assert!(err.msg.contains("CNI_CONTAINERID"), "{}", err.msg);
}

#[rstest]
#[case("a")]
#[case("0")]
#[case("abc_DEF.1-2")]
#[case("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")]
fn good_container_ids(#[case] id: &'static str) {
    assert_eq!(
        CniEnv::from_lookup(lookup(&with(full_add(), "CNI_CONTAINERID", Some(id))))
            .unwrap()
            .container_id,
        id
    );
}

#[rstest]
#[case::too_long("abcdefghijklmnop", "longer than 15")]
#[case::too_long_multibyte("ééééééééé", "longer than 15")]
#[case::dot(".", "not allowed")]
#[case::dotdot("..", "not allowed")]
#[case::slash("a/b", "'/'")]
#[case::colon("eth0:1", "':'")]
#[case::space("et h0", "' '")]
#[case::tab("eth\t0", "'\\t'")]
#[case::newline("eth0\n", "'\\n'")]
fn bad_ifname_is_code_4_and_says_why(#[case] name: &'static str, #[case] why: &str) {
    let err = env_error(&with(full_add(), "CNI_IFNAME", Some(name)));
    assert_eq!(err.code, codes::INVALID_ENVIRONMENT);
    assert!(
        err.msg.contains("CNI_IFNAME") && err.msg.contains(why),
        "{}",
        err.msg
    );
    assert!(CniEnv::validate_ifname(name).unwrap_err().contains(why));
}

#[rstest]
#[case("eth0")]
#[case("net1")]
#[case("abcdefghijklmno")]
#[case("...")]
#[case("a.b-c_d@e")]
fn good_ifnames(#[case] name: &str) {
    assert_eq!(CniEnv::validate_ifname(name), Ok(()));
}

#[test]
fn empty_ifname_is_rejected_by_validate_ifname() {
    assert!(CniEnv::validate_ifname("").unwrap_err().contains("empty"));
}

#[test]
fn malformed_cni_args_is_code_4() {
    let err = env_error(&with(full_add(), "CNI_ARGS", Some("A=1;oops")));
    assert_eq!(err.code, codes::INVALID_ENVIRONMENT);
    assert!(
        err.msg.contains("CNI_ARGS") && err.msg.contains("oops"),
        "{}",
        err.msg
    );
}

#[test]
fn command_parse_is_exact() {
    for c in Command::ALL {
        assert_eq!(Command::parse(c.as_str()), Some(c));
        assert_eq!(Command::parse(&c.as_str().to_lowercase()), None);
    }
    assert_eq!(Command::parse(""), None);
}

#[test]
fn cni_args_values_may_contain_equals() {
    let args = CniArgs::parse("K8S_POD_NAME=web;IgnoreUnknown=1;EXTRA=a=b=c;EMPTY=").unwrap();
    assert_eq!(args.get("EXTRA"), Some("a=b=c"));
    assert_eq!(args.get("EMPTY"), Some(""));
    assert_eq!(args.get(CniArgs::IGNORE_UNKNOWN), Some("1"));
    assert_eq!(args.get("missing"), None);
    assert_eq!(
        args.to_env_string(),
        "K8S_POD_NAME=web;IgnoreUnknown=1;EXTRA=a=b=c;EMPTY="
    );
}

#[rstest]
#[case("", vec![])]
#[case(";;", vec![])]
#[case("a=b;;c=d;", vec![("a", "b"), ("c", "d")])]
#[case("a==", vec![("a", "=")])]
fn cni_args_skip_empty_segments(#[case] input: &str, #[case] expected: Vec<(&str, &str)>) {
    let expected: Vec<(String, String)> = expected
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    assert_eq!(CniArgs::parse(input).unwrap().0, expected);
}

#[rstest]
#[case("novalue", "novalue")]
#[case("a=b;c", "c")]
#[case("=value", "=value")]
fn cni_args_malformed_segments(#[case] input: &str, #[case] bad: &str) {
    assert_eq!(CniArgs::parse(input), Err(ArgsError::Malformed(bad.into())));
}

#[test]
fn cni_args_last_duplicate_wins_and_set_collapses() {
    let mut args = CniArgs::parse("A=1;B=2;A=3").unwrap();
    assert_eq!(args.get("A"), Some("3"));
    args.set("A", "x=y");
    assert_eq!(args.to_env_string(), "A=x=y;B=2");
    args.set("C", "4");
    assert_eq!(args.to_env_string(), "A=x=y;B=2;C=4");
}

proptest! {
    #[test]
    fn cni_args_round_trip(pairs in proptest::collection::vec(("[A-Za-z0-9_.-]{1,16}", "[^;]{0,16}"), 0..6)) {
        let args = CniArgs(pairs);
        let text = args.to_env_string();
        prop_assert_eq!(CniArgs::parse(&text).unwrap(), args);
    }

    #[test]
    fn cni_args_parse_never_panics_and_reformats_stably(s in ".{0,40}") {
        if let Ok(args) = CniArgs::parse(&s) {
            prop_assert_eq!(CniArgs::parse(&args.to_env_string()).unwrap(), args);
        }
    }
}
