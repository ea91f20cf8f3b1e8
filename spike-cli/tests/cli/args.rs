use clap::{CommandFactory, Parser, error::ErrorKind};
use spike_cli::{
    CipherCommand, Cli, Command, Config, Error, Format, Identity, MetadataCommand, OperatorCommand,
    PolicyCommand, SecretCommand, resolve_pairs,
};
use spike_core::Permission;

fn parse(args: &[&str]) -> Cli {
    let mut full = vec!["spike"];
    full.extend_from_slice(args);
    Cli::try_parse_from(full).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn usage_error(args: &[&str]) -> ErrorKind {
    let mut full = vec!["spike"];
    full.extend_from_slice(args);
    let err = Cli::try_parse_from(full).expect_err("should not parse");
    assert_eq!(err.exit_code(), 2, "{args:?}: usage errors exit 2");
    err.kind()
}

#[test]
fn definitions_are_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn globals_and_defaults() {
    let cli = parse(&["secret", "list"]);
    assert_eq!(cli.format, Format::Human);
    assert_eq!(cli.trust_root, "spike.ist");
    assert!(cli.cert.is_none() && cli.nexus_id.is_none());
    // --format is global: before or after the subcommand.
    assert_eq!(
        parse(&["--format", "json", "secret", "list"]).format,
        Format::Json
    );
    assert_eq!(
        parse(&["secret", "list", "--format", "yaml"]).format,
        Format::Yaml
    );
    let cli = parse(&[
        "--nexus",
        "https://nexus:9443",
        "--cert",
        "c.pem",
        "--key",
        "k.pem",
        "--ca",
        "ca.pem",
        "--trust-root",
        "example.org",
        "--nexus-id",
        "spiffe://example.org/nexus",
        "secret",
        "list",
    ]);
    assert_eq!(cli.nexus, "https://nexus:9443");
    assert_eq!(cli.key.as_deref(), Some(std::path::Path::new("k.pem")));
    assert_eq!(cli.nexus_id.as_deref(), Some("spiffe://example.org/nexus"));
    assert_eq!(
        usage_error(&["--format", "xml", "secret", "list"]),
        ErrorKind::InvalidValue
    );
    assert_eq!(
        usage_error(&[]),
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
}

#[test]
fn secret_commands() {
    let Command::Secret(SecretCommand::Put { path, pairs }) =
        parse(&["secret", "put", "db/creds", "user=app", "pass=@file", "x=-"]).command
    else {
        panic!()
    };
    assert_eq!(path, "db/creds");
    assert_eq!(pairs.len(), 3);
    // The identity key file and the secret key name coexist.
    let cli = parse(&[
        "--key",
        "pilot.key",
        "secret",
        "get",
        "db/creds",
        "--version",
        "3",
        "--key",
        "user",
    ]);
    assert_eq!(cli.key.as_deref(), Some(std::path::Path::new("pilot.key")));
    let Command::Secret(SecretCommand::Get { path, version, key }) = cli.command else {
        panic!()
    };
    assert_eq!(
        (path.as_str(), version, key.as_deref()),
        ("db/creds", Some(3), Some("user"))
    );
    assert!(matches!(
        parse(&["secret", "list"]).command,
        Command::Secret(SecretCommand::List)
    ));
    for (verb, expect) in [("delete", 0), ("undelete", 1), ("destroy", 2)] {
        let cmd = parse(&["secret", verb, "a/b", "--versions", "1,2,5"]).command;
        let (which, args) = match cmd {
            Command::Secret(SecretCommand::Delete(a)) => (0, a),
            Command::Secret(SecretCommand::Undelete(a)) => (1, a),
            Command::Secret(SecretCommand::Destroy(a)) => (2, a),
            other => panic!("{other:?}"),
        };
        assert_eq!(which, expect);
        assert_eq!((args.path.as_str(), args.versions), ("a/b", vec![1, 2, 5]));
        let Command::Secret(
            SecretCommand::Delete(a) | SecretCommand::Undelete(a) | SecretCommand::Destroy(a),
        ) = parse(&["secret", verb, "a/b"]).command
        else {
            panic!()
        };
        assert!(a.versions.is_empty());
    }
    let Command::Secret(SecretCommand::Metadata(MetadataCommand::Get { path, version })) =
        parse(&["secret", "metadata", "get", "a", "--version", "2"]).command
    else {
        panic!()
    };
    assert_eq!((path.as_str(), version), ("a", Some(2)));

    assert_eq!(
        usage_error(&["secret", "put", "a"]),
        ErrorKind::MissingRequiredArgument
    );
    assert_eq!(
        usage_error(&["secret", "get"]),
        ErrorKind::MissingRequiredArgument
    );
    assert_eq!(
        usage_error(&["secret", "get", "a", "--version", "x"]),
        ErrorKind::ValueValidation
    );
    assert_eq!(
        usage_error(&["secret", "delete", "a", "--versions", "1,x"]),
        ErrorKind::ValueValidation
    );
    assert_eq!(
        usage_error(&["secret", "rm", "a"]),
        ErrorKind::InvalidSubcommand
    );
}

#[test]
fn a_mistyped_pair_is_not_echoed() {
    // clap accepts every pair; validation names the argument, not its text.
    let Command::Secret(SecretCommand::Put { pairs, .. }) =
        parse(&["secret", "put", "p", "user=app", "hunter2"]).command
    else {
        panic!()
    };
    assert!(!format!("{pairs:?}").contains("hunter2"));
    assert!(!format!("{pairs:?}").contains("app"));
    let err = resolve_pairs(&pairs, &mut std::io::empty()).unwrap_err();
    assert!(matches!(err, Error::Usage(_)));
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("argument 2"));
    assert!(!err.to_string().contains("hunter2"));
}

#[test]
fn pairs_from_files_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "from file\n").unwrap();
    let arg = format!("pw=@{}", file.display());
    let Command::Secret(SecretCommand::Put { pairs, .. }) =
        parse(&["secret", "put", "p", "user=a=b", &arg, "token=-", "empty="]).command
    else {
        panic!()
    };
    let values = resolve_pairs(&pairs, &mut &b"from stdin\r\n"[..]).unwrap();
    assert_eq!(values["user"].as_str(), "a=b");
    assert_eq!(values["pw"].as_str(), "from file");
    assert_eq!(values["token"].as_str(), "from stdin");
    assert_eq!(values["empty"].as_str(), "");

    let Command::Secret(SecretCommand::Put { pairs, .. }) =
        parse(&["secret", "put", "p", "a=1", "a=2"]).command
    else {
        panic!()
    };
    assert!(
        resolve_pairs(&pairs, &mut std::io::empty())
            .unwrap_err()
            .to_string()
            .contains("twice")
    );
    let Command::Secret(SecretCommand::Put { pairs, .. }) =
        parse(&["secret", "put", "p", "a=@/nonexistent/file"]).command
    else {
        panic!()
    };
    let err = resolve_pairs(&pairs, &mut std::io::empty()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn policy_commands() {
    let Command::Policy(PolicyCommand::Create {
        name,
        spiffeid_pattern,
        path_pattern,
        permissions,
    }) = parse(&[
        "policy",
        "create",
        "--name",
        "web",
        "--spiffeid-pattern",
        "spiffe://spike.ist/web/.*",
        "--path-pattern",
        "web/.*",
        "--permissions",
        "read,list",
    ])
    .command
    else {
        panic!()
    };
    assert_eq!(name, "web");
    assert_eq!(spiffeid_pattern, "spiffe://spike.ist/web/.*");
    assert_eq!(path_pattern, "web/.*");
    assert_eq!(permissions, vec![Permission::Read, Permission::List]);
    assert_eq!(
        usage_error(&[
            "policy",
            "create",
            "--name",
            "a",
            "--spiffeid-pattern",
            "x",
            "--path-pattern",
            "y",
            "--permissions",
            "read,fly"
        ]),
        ErrorKind::ValueValidation
    );
    assert_eq!(
        usage_error(&[
            "policy",
            "create",
            "--name",
            "a",
            "--spiffeid-pattern",
            "x",
            "--path-pattern",
            "y"
        ]),
        ErrorKind::MissingRequiredArgument
    );
    let Command::Policy(PolicyCommand::Apply { file }) =
        parse(&["policy", "apply", "-f", "p.yaml"]).command
    else {
        panic!()
    };
    assert_eq!(file, std::path::Path::new("p.yaml"));
    assert!(matches!(
        parse(&["policy", "apply", "--file", "p.yaml"]).command,
        Command::Policy(PolicyCommand::Apply { .. })
    ));
    let Command::Policy(PolicyCommand::List {
        spiffeid_pattern,
        path_pattern,
    }) = parse(&["policy", "list", "--path-pattern", "web/.*"]).command
    else {
        panic!()
    };
    assert_eq!(
        (spiffeid_pattern, path_pattern.as_deref()),
        (None, Some("web/.*"))
    );
    assert!(
        matches!(parse(&["policy", "get", "web"]).command, Command::Policy(PolicyCommand::Get { name }) if name == "web")
    );
    assert!(
        matches!(parse(&["policy", "delete", "web"]).command, Command::Policy(PolicyCommand::Delete { name }) if name == "web")
    );
}

#[test]
fn operator_cipher_completions() {
    let Command::Operator(OperatorCommand::Recover { out }) =
        parse(&["operator", "recover", "--out", "/tmp/shares"]).command
    else {
        panic!()
    };
    assert_eq!(out, std::path::Path::new("/tmp/shares"));
    assert_eq!(
        usage_error(&["operator", "recover"]),
        ErrorKind::MissingRequiredArgument
    );
    assert!(matches!(
        parse(&["operator", "restore"]).command,
        Command::Operator(OperatorCommand::Restore)
    ));
    // One share per run, never on the command line.
    assert_eq!(
        usage_error(&["operator", "restore", "spike:1:00"]),
        ErrorKind::UnknownArgument
    );
    let Command::Cipher(CipherCommand::Encrypt(args)) =
        parse(&["cipher", "encrypt", "--in", "a", "--out", "b"]).command
    else {
        panic!()
    };
    assert_eq!(
        (args.input.unwrap(), args.output.unwrap()),
        ("a".into(), "b".into())
    );
    let Command::Cipher(CipherCommand::Decrypt(args)) = parse(&["cipher", "decrypt"]).command
    else {
        panic!()
    };
    assert!(args.input.is_none() && args.output.is_none());
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        assert!(matches!(
            parse(&["completions", shell]).command,
            Command::Completions { .. }
        ));
    }
    assert_eq!(
        usage_error(&["completions", "tcsh"]),
        ErrorKind::InvalidValue
    );
}

fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

#[test]
fn config_validation() {
    // Flags (or SPIKE_PILOT_*, read by clap) give a PEM identity.
    let cli = parse(&["--cert", "c", "--key", "k", "--ca", "a", "secret", "list"]);
    let config = Config::from_cli(&cli, &env_of(&[])).unwrap();
    assert_eq!(config.nexus.as_str(), "https://127.0.0.1:8553/");
    assert!(matches!(config.identity, Identity::Pem { .. }));
    assert_eq!(
        config.nexus_ids[0].as_str(),
        "spiffe://spike.ist/spike/nexus"
    );

    // SPIKE_CERT/KEY/CA as fallbacks.
    let cli = parse(&["--trust-root", "a.org,b.org", "secret", "list"]);
    let config = Config::from_cli(
        &cli,
        &env_of(&[("SPIKE_CERT", "c"), ("SPIKE_KEY", "k"), ("SPIKE_CA", "a")]),
    )
    .unwrap();
    assert_eq!(
        config.identity,
        Identity::Pem {
            cert: "c".into(),
            key: "k".into(),
            ca: "a".into()
        }
    );
    let ids: Vec<&str> = config.nexus_ids.iter().map(|i| i.as_str()).collect();
    assert_eq!(
        ids,
        ["spiffe://a.org/spike/nexus", "spiffe://b.org/spike/nexus"]
    );

    // Else the Workload API.
    let cli = parse(&["--nexus-id", "spiffe://x.org/n", "secret", "list"]);
    let config = Config::from_cli(
        &cli,
        &env_of(&[("SPIFFE_ENDPOINT_SOCKET", "unix:///tmp/agent.sock")]),
    )
    .unwrap();
    assert_eq!(
        config.identity,
        Identity::WorkloadApi("unix:///tmp/agent.sock".into())
    );
    assert_eq!(config.nexus_ids[0].as_str(), "spiffe://x.org/n");

    // Nothing: a config error (exit 1) saying what to do.
    let err = Config::from_cli(&parse(&["secret", "list"]), &env_of(&[])).unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert!(err.to_string().contains("SPIFFE_ENDPOINT_SOCKET"), "{err}");
    // Half an identity.
    let err =
        Config::from_cli(&parse(&["--cert", "c", "secret", "list"]), &env_of(&[])).unwrap_err();
    assert!(err.to_string().contains("--key and --ca"), "{err}");

    // Bad URL, scheme, trust root, ID: usage errors.
    for args in [
        &[
            "--nexus",
            "not a url",
            "--cert",
            "c",
            "--key",
            "k",
            "--ca",
            "a",
            "secret",
            "list",
        ][..],
        &[
            "--nexus",
            "http://127.0.0.1:8553",
            "--cert",
            "c",
            "--key",
            "k",
            "--ca",
            "a",
            "secret",
            "list",
        ],
        &[
            "--trust-root",
            "Bad/TD",
            "--cert",
            "c",
            "--key",
            "k",
            "--ca",
            "a",
            "secret",
            "list",
        ],
        &[
            "--nexus-id",
            "https://x",
            "--cert",
            "c",
            "--key",
            "k",
            "--ca",
            "a",
            "secret",
            "list",
        ],
    ] {
        let err = Config::from_cli(&parse(args), &env_of(&[])).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
    }
}
