//! The forget ledger (`_pinpipe_forgotten.json` at the tables' root): the `ind`s a
//! `pinpipe forget` erased, which every writer reads with its tables and obeys, so a forgotten
//! record is never tabled or quarantined again.

use std::collections::BTreeSet;

use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::names::Kind;
use crate::record;
use crate::storage::Location;

/// The ledger of forgotten `ind`s, at the tables' root.
pub const LEDGER: &str = "_pinpipe_forgotten.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Ledger {
    inds: BTreeSet<i64>,
}

/// The ledger as a writer last read it: the forgotten `ind`s and the object's ETag (`None`:
/// there was no ledger).
#[derive(Debug, Default, Clone)]
pub struct LedgerState {
    pub inds: BTreeSet<i64>,
    etag: Option<String>,
}

/// The forgotten `ind`s (none when there is no ledger yet).
pub async fn load_ledger(root: &Location) -> Result<BTreeSet<i64>> {
    Ok(load(root).await?.inds)
}

/// The ledger with its ETag.
pub async fn load(root: &Location) -> Result<LedgerState> {
    Ok(reload(root, &LedgerState::default()).await?.unwrap_or_default())
}

/// The ledger again, or `None` when it is unchanged since `known`: a conditional GET
/// (If-None-Match), so an unchanged ledger costs no body and no parse, however large it is.
pub async fn reload(root: &Location, known: &LedgerState) -> Result<Option<LedgerState>> {
    let store = root.store()?;
    let path = Path::from(LEDGER);
    let storage = |e| Error::Storage { location: root.join(LEDGER).display(), source: e };
    let opts = GetOptions { if_none_match: known.etag.clone(), ..Default::default() };
    let got = match store.get_opts(&path, opts).await {
        Ok(got) => got,
        Err(object_store::Error::NotModified { .. }) => return Ok(None),
        Err(object_store::Error::NotFound { .. }) => {
            return Ok((known.etag.is_some() || !known.inds.is_empty()).then(LedgerState::default));
        }
        Err(e) => return Err(storage(e)),
    };
    let etag = got.meta.e_tag.clone();
    let bytes = got.bytes().await.map_err(storage)?;
    let ledger: Ledger = serde_json::from_slice(&bytes)
        .map_err(|e| Error::input(root.join(LEDGER).display(), format!("not a forget ledger: {e}")))?;
    Ok(Some(LedgerState { inds: ledger.inds, etag }))
}

pub(crate) async fn add_to_ledger(root: &Location, inds: &BTreeSet<i64>) -> Result<()> {
    let mut all = load_ledger(root).await?;
    if inds.is_subset(&all) {
        return Ok(());
    }
    all.extend(inds);
    let body = serde_json::to_vec(&Ledger { inds: all }).unwrap_or_default();
    root.store()?
        .put(&Path::from(LEDGER), PutPayload::from(body))
        .await
        .map_err(|e| Error::Storage { location: root.join(LEDGER).display(), source: e })?;
    Ok(())
}

/// Whether a record of `kind` has a forgotten key: its parsed key, or for a record that does
/// not parse, the `ind`/`index` its text still shows.
pub fn is_forgotten(kind: Kind, bytes: &[u8], forgotten: &BTreeSet<i64>) -> bool {
    match record::with_parsed(kind, bytes, |r| r.key) {
        Ok(key) => forgotten.contains(&key),
        Err(_) => crate::record::loose_fields(bytes).ind.is_some_and(|i| forgotten.contains(&i)),
    }
}

