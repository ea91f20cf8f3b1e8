//! spike-core embedded in an application, no server: open a redb file,
//! initialise, write and read secrets as an authorised workload, watch a
//! denied read, drop everything, reopen, unseal with two of the three
//! shares, and read again.
//!
//! ```text
//! cargo run -p spike-core --example embedded [DATA_DIR]
//! ```
//!
//! Without `DATA_DIR` it works in a fresh temporary directory.

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;

use spike_core::{
    Caller, Nexus, Permission, PolicySpec, SecretData, SpiffeId, VersionRead, WriteOptions,
};
use spike_storage::RedbStore;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let temp = tempfile::tempdir()?;
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| temp.path().to_path_buf(), PathBuf::from);
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("embedded-example.redb");
    if file.exists() {
        return Err(format!("{} exists: pick an empty directory", file.display()).into());
    }

    let admin = Caller::new(SpiffeId::parse(
        "spiffe://spike.ist/spike/pilot/role/superuser",
    )?);
    let billing = Caller::new(SpiffeId::parse("spiffe://spike.ist/workload/billing")?);
    let intruder = Caller::new(SpiffeId::parse("spiffe://spike.ist/workload/intruder")?);

    // 1. Open a store and initialise it.
    println!("opening {}", file.display());
    let nexus = Nexus::builder(Arc::new(RedbStore::open(&file)?))
        .open()
        .await?;
    let shares = nexus.init().await?;
    println!(
        "initialised: root key split into {} shares (threshold 2); the key itself is never stored",
        shares.len()
    );

    // 2. A policy lets the billing workload read and write under billing/.
    nexus
        .put_policy(
            &admin,
            PolicySpec {
                name: "billing-rw".into(),
                spiffeid_pattern: "spiffe://spike.ist/workload/billing".into(),
                path_pattern: "billing/.*".into(),
                permissions: [Permission::Read, Permission::Write].into_iter().collect(),
            },
        )
        .await?;
    println!("policy billing-rw: spiffe://spike.ist/workload/billing may read+write billing/.*");

    // 3. The workload writes two versions and reads them back.
    for password in ["s3cret-v1", "s3cret-v2"] {
        let data = SecretData::from_pairs([("username", "billing"), ("password", password)])?;
        let v = nexus
            .put_secret(&billing, "billing/db", data, WriteOptions::default())
            .await?;
        println!("billing wrote billing/db version {} (durable)", v.number);
    }
    print_read(&nexus, &billing, "billing/db", 0)?;
    print_read(&nexus, &billing, "billing/db", 1)?;

    // 4. Another workload has no policy: denied.
    match nexus.get_secret(&intruder, "billing/db", 0) {
        Err(e) => println!("intruder reading billing/db: refused ({e})"),
        Ok(_) => return Err("intruder was allowed to read".into()),
    }

    // 5. Close everything: the process "restarts".
    nexus.close().await;
    println!("closed the store: keys and plaintext are gone from memory");

    // 6. Reopen: sealed until two shares come back.
    let nexus = Nexus::builder(Arc::new(RedbStore::open(&file)?))
        .open()
        .await?;
    println!("reopened: {:?}", nexus.status());
    if nexus.get_secret(&billing, "billing/db", 0).is_ok() {
        return Err("a sealed store served a secret".into());
    }
    nexus
        .unseal(&[shares[0].try_clone(), shares[2].try_clone()])
        .await?;
    println!("unsealed with shares 1 and 3: {:?}", nexus.status());
    print_read(&nexus, &billing, "billing/db", 0)?;
    Ok(())
}

fn print_read(
    nexus: &Nexus,
    caller: &Caller,
    path: &str,
    version: u64,
) -> Result<(), Box<dyn Error>> {
    match nexus.get_secret(caller, path, version)? {
        VersionRead::Live { version, data } => {
            let object = data.to_object();
            let keys: Vec<_> = object.keys().collect();
            println!(
                "{} read {path} version {}: keys {keys:?}, password = {}",
                caller.id,
                version.number,
                object
                    .get("password")
                    .and_then(|v| v.as_str())
                    .unwrap_or("?")
            );
        }
        VersionRead::Gone(v) => println!("{path} version {} is deleted", v.number),
    }
    Ok(())
}
