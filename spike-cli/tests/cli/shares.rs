use std::os::unix::fs::PermissionsExt;

use spike_api::{RecoverResponse, ShardBytes};
use spike_cli::{
    Error, parse_policy_yaml, parse_share, read_share_text, restore_request, share_file_name,
    shares_of, write_share_files,
};

/// Two valid share values (small non-zero scalars).
fn response() -> RecoverResponse {
    let mut one = [0u8; 32];
    one[31] = 7;
    let mut two = [0u8; 32];
    two[0] = 0x12;
    two[31] = 0xab;
    RecoverResponse {
        shards: [
            ("2".to_owned(), ShardBytes::new(two)),
            ("1".to_owned(), ShardBytes::new(one)),
        ]
        .into(),
    }
}

#[test]
fn writes_one_private_file_per_share_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("shares");
    let shares = shares_of(&response()).unwrap();
    let files = write_share_files(&out, &shares).unwrap();
    assert_eq!(
        files,
        vec![
            out.join("spike.recovery.1.txt"),
            out.join("spike.recovery.2.txt")
        ]
    );
    assert_eq!(share_file_name(3), "spike.recovery.3.txt");
    let dir_mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    for (file, share) in files.iter().zip(&shares) {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
        let text = std::fs::read_to_string(file).unwrap();
        assert_eq!(text.trim_end(), share.to_text().as_str());
        // Upstream's format, read back.
        assert_eq!(parse_share(&text).unwrap().value(), share.value());
    }
    let first = std::fs::read_to_string(&files[0]).unwrap();
    assert!(first.starts_with("spike:1:00000000"), "{first}");

    // A second run refuses, changes nothing.
    let err = write_share_files(&out, &shares).unwrap_err();
    assert!(err.to_string().contains("refusing to overwrite"), "{err}");
    assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), first);

    // Even one existing file stops the whole write.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("spike.recovery.2.txt"), "keep me").unwrap();
    assert!(write_share_files(&other, &shares).is_err());
    assert!(!other.join("spike.recovery.1.txt").exists());
    assert_eq!(
        std::fs::read_to_string(other.join("spike.recovery.2.txt")).unwrap(),
        "keep me"
    );
}

#[test]
fn bad_recover_answers_are_refused() {
    let mut bad_id = response();
    let v = bad_id.shards.remove("1").unwrap();
    bad_id.shards.insert("0".into(), v);
    assert!(shares_of(&bad_id).is_err());
    let zero = RecoverResponse {
        shards: [("1".to_owned(), ShardBytes::new([0; 32]))].into(),
    };
    assert!(shares_of(&zero).is_err());
    assert!(shares_of(&RecoverResponse::default()).is_err());
}

#[test]
fn restore_input_parsing() {
    let hex = "00".repeat(31) + "07";
    let share = parse_share(&format!("  spike:1:{hex}\n")).unwrap();
    assert_eq!(share.id(), 1);
    let request = restore_request(&share);
    assert_eq!(request.id, 1);
    assert_eq!(request.shard.expose()[31], 7);
    assert!(parse_share(&format!("spike:200:{}", hex.to_uppercase())).is_ok());

    let secret_looking = "c0ffee".repeat(10) + "abcd";
    for bad in [
        String::new(),
        "hunter2".to_owned(),
        format!("spike:0:{hex}"),
        format!("spike:256:{hex}"),
        format!("spike:1:{}", &hex[..62]),
        format!("spike:1:{}zz", &hex[..62]),
        format!("spike:1:{}", "ff".repeat(32)), // not below the group order
        format!("spike:1:{}", "00".repeat(32)), // zero
        format!("share:1:{secret_looking}"),
        format!("spike:1:{secret_looking}00"),
    ] {
        let err = parse_share(&bad).unwrap_err();
        assert!(matches!(err, Error::Usage(_)), "{bad}");
        let msg = err.to_string();
        assert!(
            msg.contains("spike:1:"),
            "says what a share looks like: {msg}"
        );
        assert!(
            !msg.contains(&secret_looking) && !msg.contains("hunter2") && !msg.contains(&hex[..20]),
            "{msg}"
        );
    }
    assert_eq!(
        read_share_text(&b"spike:1:ab\n"[..]).unwrap().as_str(),
        "spike:1:ab\n"
    );
    assert!(read_share_text(&vec![b'a'; 5000][..]).is_err());
    assert!(read_share_text(&[0xff, 0xfe][..]).is_err());
}

#[test]
fn policy_yaml() {
    let p = parse_policy_yaml(
        "name: web\nspiffeidPattern: \"^spiffe://spike\\\\.ist/web/.*$\"\npathPattern: web/.*\npermissions:\n  - read\n  - list\n  - read\n",
    )
    .unwrap();
    assert_eq!(p.name, "web");
    assert_eq!(p.spiffeid_pattern, "^spiffe://spike\\.ist/web/.*$");
    assert_eq!(p.path_pattern, "web/.*");
    assert_eq!(p.permissions, ["read", "list"]);
    for bad in [
        "name: web\n",                                                         // missing fields
        "name: web\nspiffeidPattern: a\npathPattern: b\npermissions: [fly]\n", // bad permission
        "name: web\nspiffeidPattern: a\npathPattern: b\npermissions: []\n",    // none
        "name: web\nspiffeidPattern: a\npathPattern: b\npermissions: [read]\nx: 1\n", // unknown field
        "name: ''\nspiffeidPattern: a\npathPattern: b\npermissions: [read]\n",        // empty name
        ": : :\n",
    ] {
        let err = parse_policy_yaml(bad).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{bad}: {err}");
    }
}
