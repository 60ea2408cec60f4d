//! The forget ledger (`_pinpipe_forgotten.json` at the tables' root): the `ind`s a
//! `pinpipe forget` erased, which every writer reads with its tables and obeys, so a forgotten
//! record is never tabled or quarantined again.

use std::collections::BTreeSet;
use std::sync::Arc;

use object_store::path::Path;
use object_store::{GetOptions, ObjectStore};
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

/// Adds `inds` to the ledger, as a conditional replace: two forgets at once both land.
pub(crate) async fn add_to_ledger(root: &Location, inds: &BTreeSet<i64>) -> Result<()> {
    add_to_ledger_in(&root.store()?, root, inds).await
}

async fn add_to_ledger_in(store: &Arc<dyn ObjectStore>, root: &Location, inds: &BTreeSet<i64>) -> Result<()> {
    crate::storage::update_object(store, &Path::from(LEDGER), |current| {
        let mut ledger: Ledger = match current {
            Some(bytes) => serde_json::from_slice(bytes)
                .map_err(|e| Error::input(root.join(LEDGER).display(), format!("not a forget ledger: {e}")))?,
            None => Ledger::default(),
        };
        if inds.is_subset(&ledger.inds) {
            return Ok(None);
        }
        ledger.inds.extend(inds);
        Ok(Some(serde_json::to_vec(&ledger).unwrap_or_default()))
    })
    .await?;
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


#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::racing::RacingStore;

    /// Two forgets at once: the other's ledger lands between this one's read and its write,
    /// and both sets of `ind`s stay.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_forget_racing_another_keeps_both_sets() {
        let (dir, root) = crate::storage::test_root("ledger-race");
        add_to_ledger(&root, &BTreeSet::from([1])).await.unwrap();
        let other = serde_json::to_vec(&Ledger { inds: BTreeSet::from([1, 5]) }).unwrap();
        let store = RacingStore::wrap(root.store().unwrap(), vec![(Path::from(LEDGER), other)]);
        add_to_ledger_in(&store, &root, &BTreeSet::from([7])).await.unwrap();
        assert_eq!(load_ledger(&root).await.unwrap(), BTreeSet::from([1, 5, 7]));
        let _ = std::fs::remove_dir_all(dir);
    }
}
