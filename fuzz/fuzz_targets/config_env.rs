//! What the `spike` CLI reads from its user: the command line (clap, then
//! `Config::from_cli` with the fallback environment variables, then the
//! local validation of `prepare`), policy files (`spike policy apply -f`,
//! YAML through serde-saphyr) and share files (`spike operator restore <
//! spike.recovery.N.txt`).
//!
//! spike-server's command line is not covered: it is defined in its binary
//! (`spike-server/src/main.rs`), not in a library the fuzzer can call.
//!
//! Input: byte 0 `% 4` chooses
//! - 0: argv, NUL-separated (`spike` is prepended);
//! - 1: `ENV 0xFF ARGV`: ENV lines `NAME=VALUE` are what `from_cli`'s
//!   environment lookup answers (`SPIKE_CERT`, `SPIFFE_ENDPOINT_SOCKET`…);
//! - 2: a policy YAML file;
//! - 3: a share file's bytes.
//!
//! Asserts: no panic (clap errors are rendered too); a policy file
//! accepted has a non-blank name and patterns and only known permissions;
//! a share accepted re-parses from its own text to the same share, and
//! `Error::exit_code` is 2 for every refused file. No file or stdin is
//! read: `KEY=@FILE` values are not resolved, `KEY=-` reads a fixed
//! buffer.
#![no_main]

use std::collections::HashMap;
use std::io::Cursor;

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use spike_cli::{
    Cli, Command, Config, EXIT_USAGE, PolicyCommand, SecretCommand, parse_policy_yaml, parse_share,
    read_share_text, resolve_pairs, restore_request,
};
use spike_core::Permission;

fn argv(env: &HashMap<String, String>, args: &[u8]) {
    let mut argv = vec!["spike".to_owned()];
    argv.extend(
        args.split(|&b| b == 0)
            .take(32)
            .map(|a| String::from_utf8_lossy(a).into_owned()),
    );
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.render().to_string();
            return;
        }
    };
    let lookup = |name: &str| env.get(name).cloned();
    if let Err(e) = Config::from_cli(&cli, &lookup) {
        let _ = (e.to_string(), e.exit_code());
    }
    // The local input of the commands that read no file and no stdin.
    match &cli.command {
        Command::Secret(SecretCommand::Put { pairs, .. }) => {
            if argv.iter().all(|a| !a.contains("=@")) {
                let mut stdin = Cursor::new(b"from stdin\n".to_vec());
                if let Err(e) = resolve_pairs(pairs, &mut stdin) {
                    assert_eq!(e.exit_code(), EXIT_USAGE, "pairs: {e}");
                }
            }
        }
        Command::Policy(PolicyCommand::Create { .. })
        | Command::Secret(_)
        | Command::Policy(PolicyCommand::Get { .. } | PolicyCommand::List { .. }) => {
            if let Err(e) = spike_cli::prepare(&cli.command) {
                assert_eq!(e.exit_code(), EXIT_USAGE, "prepare: {e}");
            }
        }
        _ => {}
    }
}

fn policy_file(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    match parse_policy_yaml(text) {
        Ok(req) => {
            for field in [&req.name, &req.spiffeid_pattern, &req.path_pattern] {
                assert!(!field.trim().is_empty(), "blank field accepted");
            }
            assert!(!req.permissions.is_empty(), "no permissions accepted");
            for p in &req.permissions {
                assert!(
                    Permission::parse(p).is_ok(),
                    "unknown permission {p:?} accepted"
                );
            }
        }
        Err(e) => assert_eq!(e.exit_code(), EXIT_USAGE, "policy file: {e}"),
    }
}

fn share_file(bytes: &[u8]) {
    let text = match read_share_text(Cursor::new(bytes)) {
        Ok(t) => t,
        Err(e) => {
            assert_eq!(e.exit_code(), EXIT_USAGE, "share file: {e}");
            return;
        }
    };
    match parse_share(&text) {
        Ok(share) => {
            let again = parse_share(&share.to_text()).expect("a share's own text parses");
            assert_eq!(again.id(), share.id());
            assert_eq!(again.value(), share.value());
            let req = restore_request(&share);
            assert_eq!((req.id, req.shard.expose()), (share.id(), share.value()));
        }
        Err(e) => assert_eq!(e.exit_code(), EXIT_USAGE, "share: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => argv(&HashMap::new(), rest),
        1 => {
            let (env, args) = match rest.iter().position(|&b| b == 0xFF) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            let env = String::from_utf8_lossy(env)
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            argv(&env, args);
        }
        2 => policy_file(rest),
        _ => share_file(rest),
    }
});
