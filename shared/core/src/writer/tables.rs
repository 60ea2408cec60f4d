//! The exactly-once writer: `Tables` holds the cleaned tables and the quarantine of one
//! pipeline and writes each batch with its txn watermarks (see the module above).

use std::collections::HashMap;

use deltalake::DeltaTable;
use serde::Serialize;

use crate::clean::{self, Quality};
use crate::delta;
use crate::error::Result;
use crate::storage::landing::SourceRecords;
use crate::names::{Kind, PipelineId};
use crate::record::RawRecord;
use crate::storage::Location;
use crate::watermark::Mark;
use super::coverage::{Coverage, Gap};
use super::ledger;
use super::shard_slots::{self, Archive, Home, SlotPlan, ARCHIVE_TXN};

/// What one write did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WriteReport {
    /// Records handed in.
    pub received: u64,
    /// Records the table already held (at or below its watermark, outside open gaps): written
    /// earlier. For Kinesis this also counts any record at or below the watermark that was
    /// never written, which sequence numbers cannot tell from a redelivery.
    pub skipped: u64,
    pub tabled: u64,
    pub quarantined: u64,
    /// Gaps this write opened (offsets skipped past the watermark).
    pub gaps_opened: u64,
    /// Records of posts erased by `pinpipe forget`: dropped, their positions counted as
    /// written so they open no gap.
    #[serde(skip_serializing_if = "is_zero")]
    pub forgotten: u64,
    pub quality: Quality,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl WriteReport {
    pub fn add(&mut self, o: &WriteReport) {
        self.received += o.received;
        self.skipped += o.skipped;
        self.tabled += o.tabled;
        self.quarantined += o.quarantined;
        self.gaps_opened += o.gaps_opened;
        self.forgotten += o.forgotten;
        self.quality.add(&o.quality);
    }
}

/// Where an injected crash stops a commit (fault schedules only).
#[cfg(any(test, feature = "fault-injection"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// After the quarantine commit, before the data commit.
    AfterQuarantine,
    /// After both commits, before the writer could report success (its batch is redelivered).
    AfterData,
}

#[cfg(any(test, feature = "fault-injection"))]
#[derive(Default)]
struct Faults {
    crash: Option<CrashPoint>,
    pause: Option<(std::sync::Arc<tokio::sync::Notify>, std::sync::Arc<tokio::sync::Notify>)>,
}

/// Handles on the cleaned tables and the quarantine of one pipeline, opened once.
pub struct Tables {
    pub root: Location,
    pub id: PipelineId,
    data: HashMap<Kind, DeltaTable>,
    quarantine: DeltaTable,
    /// Txn actions per table name, kept up to date with each table's loaded snapshot.
    txns: HashMap<String, delta::Txns>,
    /// Posts erased by `pinpipe forget` (its ledger, read at open, at each `refresh` and
    /// again before each commit): their records are never written again.
    ledger: ledger::LedgerState,
    /// Per table name, the shard archive last read and the id it was read under.
    archives: HashMap<String, (Option<i64>, Archive)>,
    /// How long a Kinesis shard's slot must go unwritten before another shard may take it
    /// (`shard_slots.rs`), in milliseconds.
    shard_idle_ms: i64,
    /// Fault injection for the fault schedules: where every commit stops with an error, as a
    /// writer that crashes there would, and a pause between a batch's two commits.
    #[cfg(any(test, feature = "fault-injection"))]
    faults: Faults,
}

impl<M: Mark> InFlight<M> {
    /// The kind of the batch in flight.
    pub fn kind(&self) -> Kind {
        self.staged.kind
    }
}

impl Tables {
    /// Opens (creating when absent) the three cleaned tables and the quarantine; a table whose
    /// schema conflicts is an error and is left untouched.
    pub async fn open(root: &Location, id: &PipelineId) -> Result<Self> {
        let mut data = HashMap::new();
        for kind in Kind::ALL {
            let t = delta::open_or_create(root, &id.table(kind), delta::data_schema(kind)).await?;
            data.insert(kind, t);
        }
        let quarantine =
            delta::open_or_create(root, &id.quarantine_table(), delta::quarantine_schema()).await?;
        let ledger = ledger::load(root).await?;
        Ok(Tables {
            root: root.clone(),
            id: id.clone(),
            data,
            quarantine,
            txns: HashMap::new(),
            ledger,
            archives: HashMap::new(),
            shard_idle_ms: DEFAULT_SHARD_IDLE_HOURS * 3_600_000,
            #[cfg(any(test, feature = "fault-injection"))]
            faults: Faults::default(),
        })
    }

    /// How long a Kinesis shard must write nothing before its watermark may leave its slot for
    /// the shard archive and the slot go to another shard (0: at once, as tests do).
    pub fn set_shard_idle_hours(&mut self, hours: f64) {
        self.shard_idle_ms = (hours.max(0.0) * 3_600_000.0) as i64;
    }

    /// Makes every later commit stop right after its quarantine commit (fault schedules only).
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn inject_crash_after_quarantine(&mut self, on: bool) {
        self.faults.crash = on.then_some(CrashPoint::AfterQuarantine);
    }

    /// Makes every later commit stop with an error at `at` (`None`: no crash).
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn inject_crash(&mut self, at: Option<CrashPoint>) {
        self.faults.crash = at;
    }

    /// Makes the next commit wait between its quarantine and data commits: it notifies
    /// `reached`, then waits for `resume`, so another writer can really commit in between.
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn pause_between_commits(&mut self, reached: std::sync::Arc<tokio::sync::Notify>, resume: std::sync::Arc<tokio::sync::Notify>) {
        self.faults.pause = Some((reached, resume));
    }

    /// Every (source, partition, position) the quarantine holds, read from its files.
    async fn quarantine_positions(&self, q_name: &str) -> Result<std::collections::HashSet<(String, String, String)>> {
        use arrow::array::{Array, StringArray};
        let mut out = std::collections::HashSet::new();
        for b in delta::read_batches(&self.quarantine, q_name).await? {
            let col = |n: &str| b.column_by_name(n).and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned());
            let (Some(s), Some(p), Some(o)) = (col("source"), col("partition"), col("position")) else { continue };
            for i in 0..b.num_rows() {
                if s.is_valid(i) && p.is_valid(i) && o.is_valid(i) {
                    out.insert((s.value(i).to_string(), p.value(i).to_string(), o.value(i).to_string()));
                }
            }
        }
        Ok(out)
    }

    fn data_mut(&mut self, kind: Kind) -> &mut DeltaTable {
        self.data.get_mut(&kind).expect("all kinds are opened in Tables::open")
    }

    /// The data table's stored offset watermark for `app_id` (records at or below it are in,
    /// except inside open gaps).
    pub async fn watermark(&mut self, kind: Kind, app_id: &str) -> Result<Option<i64>> {
        self.mark(kind, app_id).await
    }

    /// A source's stored watermark in the data table, for any kind of position.
    pub async fn mark<M: Mark>(&mut self, kind: Kind, app_id: &str) -> Result<Option<M>> {
        Ok(self.coverage(kind, app_id).await?.mark)
    }

    /// What the data table holds of one source: its watermark and open gaps.
    pub async fn coverage<M: Mark>(&mut self, kind: Kind, app_id: &str) -> Result<Coverage<M>> {
        self.coverage_in(Some(kind), app_id).await
    }

    /// A source's coverage in a data table (`Some(kind)`) or the quarantine (`None`), from
    /// the txn actions read once per snapshot (and, for a shard moved out of its slot, from
    /// the table's shard archive).
    async fn coverage_in<M: Mark>(&mut self, kind: Option<Kind>, app_id: &str) -> Result<Coverage<M>> {
        let txns = self.loaded_txns(kind).await?;
        match shard_slots::locate::<M>(txns, app_id) {
            Home::Own => Coverage::from_txns(txns, app_id),
            Home::Slot(base) => Coverage::from_txns(txns, &base),
            Home::Unplaced { .. } => {
                let archive = self.archive(kind).await?;
                Ok(Coverage::marked(archive.get(app_id).map(|t| M::from_text(t)).transpose()?))
            }
        }
    }

    /// The txn actions that store `next` where `now` was, for one source of a commit being
    /// built (`plan` gathers its slot changes; see `archive_moves`).
    fn coverage_txns<M: Mark>(
        &self,
        kind: Option<Kind>,
        app_id: &str,
        now: &Coverage<M>,
        next: &Coverage<M>,
        plan: &mut SlotPlan,
    ) -> Result<Vec<(String, i64)>> {
        let name = self.table_name(kind);
        let Some(txns) = self.txns.get(&name) else { return Ok(now.txns_to(app_id, next)) };
        Ok(match shard_slots::locate::<M>(txns, app_id) {
            Home::Own => now.txns_to(app_id, next),
            Home::Slot(base) => {
                plan.use_slot(&base);
                now.txns_to(&base, next)
            }
            Home::Unplaced { stream, shard } => match next.mark.as_ref().filter(|m| now.mark.as_ref() != Some(*m)) {
                Some(m) => plan.place(txns, &stream, shard, m, self.shard_idle_ms, chrono::Utc::now().timestamp_millis())?,
                None => Vec::new(),
            },
        })
    }

    /// Marks the slots the sources `app_ids` are in as written by the commit `plan` builds.
    async fn reserve_slots<M: Mark>(&mut self, kind: Option<Kind>, app_ids: &[&str], plan: &mut SlotPlan) -> Result<()> {
        if !M::slotted() {
            return Ok(());
        }
        let txns = self.loaded_txns(kind).await?;
        for app_id in app_ids {
            if let Home::Slot(base) = shard_slots::locate::<M>(txns, app_id) {
                plan.use_slot(&base);
            }
        }
        Ok(())
    }

    /// Writes the shard archive with the watermarks `plan` moves out of their slots, under a
    /// new id, and returns the txn that points the commit at it (nothing when none moved).
    async fn archive_moves(&mut self, kind: Option<Kind>, plan: SlotPlan) -> Result<Vec<(String, i64)>> {
        if plan.moved.is_empty() {
            return Ok(Vec::new());
        }
        let mut archive = self.archive(kind).await?.clone();
        archive.extend(plan.moved);
        let id = shard_slots::new_archive_id();
        let path = shard_slots::archive_path(id);
        let name = self.table_name(kind);
        let prev = self.txns.get(&name).and_then(|t| t.get(ARCHIVE_TXN));
        let body = serde_json::to_vec(&shard_slots::ArchiveBody { prev, shards: archive.clone() }).unwrap_or_default();
        let store = self.table(kind).log_store().object_store(None);
        object_store::ObjectStore::put_opts(store.as_ref(), &path, body.into(), object_store::PutMode::Create.into())
            .await
            .map_err(|source| crate::Error::Storage { location: format!("{name}/{path}"), source })?;
        self.archives.insert(name, (Some(id), archive));
        Ok(vec![(ARCHIVE_TXN.to_string(), id)])
    }

    /// The shard archive the table's loaded txn actions point to (empty when there is none).
    async fn archive(&mut self, kind: Option<Kind>) -> Result<&Archive> {
        let name = self.table_name(kind);
        let id = self.txns.get(&name).and_then(|t| t.get(ARCHIVE_TXN));
        if self.archives.get(&name).map(|a| a.0) != Some(id) {
            let archive = match id {
                None => Archive::new(),
                Some(id) => {
                    let store = self.table(kind).log_store().object_store(None);
                    let Some(body) = shard_slots::read_archive(&store, &name, id).await? else {
                        let location = format!("{name}/{}", shard_slots::archive_path(id));
                        return Err(crate::Error::input(location, format!("missing: the table's txn {ARCHIVE_TXN} names it")));
                    };
                    body.shards
                }
            };
            self.archives.insert(name.clone(), (id, archive));
        }
        Ok(&self.archives[&name].1)
    }

    /// The txn actions of a data table (`Some(kind)`) or the quarantine (`None`), brought up
    /// to its loaded snapshot (read once per snapshot).
    async fn loaded_txns(&mut self, kind: Option<Kind>) -> Result<&delta::Txns> {
        let (table, name) = match kind {
            Some(k) => (&self.data[&k], self.id.table(k)),
            None => (&self.quarantine, self.id.quarantine_table()),
        };
        let txns = self.txns.entry(name.clone()).or_default();
        txns.update(table, &name).await?;
        Ok(txns)
    }

    fn table_name(&self, kind: Option<Kind>) -> String {
        kind.map_or_else(|| self.id.quarantine_table(), |k| self.id.table(k))
    }

    fn table(&self, kind: Option<Kind>) -> &DeltaTable {
        kind.map_or(&self.quarantine, |k| &self.data[&k])
    }

    /// Every open gap of the cleaned tables: (table, source app id, gap).
    pub async fn open_gaps(&mut self) -> Result<Vec<(String, String, Gap)>> {
        let mut out = Vec::new();
        for kind in Kind::ALL {
            let name = self.id.table(kind);
            for (app_id, gap) in crate::writer::coverage::open_gaps(self.loaded_txns(Some(kind)).await?)? {
                out.push((name.clone(), app_id, gap));
            }
        }
        Ok(out)
    }

    /// Gives up an open gap (offsets that can never arrive: retention expired, compacted
    /// topics): its offsets then count as written. Returns false when no such gap is open.
    pub async fn close_gap(&mut self, kind: Kind, app_id: &str, gap: Gap) -> Result<bool> {
        let name = self.id.table(kind);
        self.data_mut(kind).update_state().await.map_err(|e| crate::Error::delta(name.clone(), e))?;
        let current: Coverage<i64> = self.coverage(kind, app_id).await?;
        if !current.gaps().contains(&gap) {
            return Ok(false);
        }
        let txns = current.txns_to(app_id, &current.close(gap));
        delta::append(self.data_mut(kind), &name, None, &txns, vec![]).await?;
        tracing::warn!(table = %name, source = app_id, first = gap.0, last = gap.1, "gap closed by an operator");
        Ok(true)
    }

    /// Brings the table handles up to date with commits made elsewhere.
    pub async fn refresh(&mut self) -> Result<()> {
        for kind in Kind::ALL {
            self.refresh_kind(kind).await?;
        }
        // Staging with the newest ledger keeps the commit's own check (in `finish`) from
        // turning every batch after a forget into a conflict and a second staging.
        if let Some(now) = ledger::reload(&self.root, &self.ledger).await? {
            self.ledger = now;
        }
        Ok(())
    }

    /// Refreshes one kind's data table and the quarantine.
    async fn refresh_kind(&mut self, kind: Kind) -> Result<()> {
        self.refresh_data(kind).await?;
        self.refresh_quarantine().await
    }

    async fn refresh_data(&mut self, kind: Kind) -> Result<()> {
        let name = self.id.table(kind);
        delta::update_if_newer(self.data_mut(kind), &name).await
    }

    async fn refresh_quarantine(&mut self) -> Result<()> {
        let name = self.id.quarantine_table();
        delta::update_if_newer(&mut self.quarantine, &name).await
    }

    /// Whether the data table of `kind` holds the txn action `app_id` (any version).
    pub async fn has_txn(&mut self, kind: Kind, app_id: &str) -> Result<bool> {
        Ok(self.txn(kind, app_id).await?.is_some())
    }

    /// The version of the data table's txn `app_id`, if it has one.
    pub async fn txn(&mut self, kind: Kind, app_id: &str) -> Result<Option<i64>> {
        Ok(self.loaded_txns(Some(kind)).await?.get(app_id))
    }

    /// The commit metadata under `key` of the data table's commit that set `app_id` to
    /// `version` (see `append_marked`).
    pub async fn marked_commit_metadata(&self, kind: Kind, app_id: &str, version: i64, key: &str) -> Result<Option<serde_json::Value>> {
        delta::txn_commit_metadata(&self.data[&kind], &self.id.table(kind), app_id, version, key).await
    }

    /// Appends cleaned rows that no source position stands for (records re-driven from the
    /// quarantine) in one commit that sets the txn `marker` to the version the commit is
    /// expected at and carries `metadata`: whoever finds the marker reads the commit's
    /// metadata with `marked_commit_metadata`. One txn action however many rows, so the
    /// table's state does not grow with them. On a conflict with another writer (two replays
    /// set the same marker), read the marker again before retrying.
    pub async fn append_marked(
        &mut self,
        kind: Kind,
        frame: &polars::prelude::DataFrame,
        marker: &str,
        metadata: (String, serde_json::Value),
        quality: &Quality,
    ) -> Result<i64> {
        let name = self.id.table(kind);
        let files = delta::start_frame_files(&self.data[&kind], &name, frame)?;
        let expected = self.data[&kind].version().map_or(0, |v| v as i64 + 1);
        let meta = vec![(delta::QUALITY_KEY.to_string(), serde_json::to_value(quality).unwrap_or_default()), metadata];
        delta::append_files(self.data_mut(kind), &name, files, &[(marker.to_string(), expected)], meta).await?;
        Ok(expected)
    }

    /// Appends entries to the quarantine in one commit (no positions are covered: records
    /// re-driven by a replay, whose positions the tables already cover).
    pub async fn append_quarantine(&mut self, entries: &[crate::record::QuarantineEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let name = self.id.quarantine_table();
        let schema = delta::arrow_schema(&self.quarantine, &name)?;
        let rows = delta::quarantine_batch(entries, schema, chrono::Utc::now().timestamp_micros())?;
        delta::append(&mut self.quarantine, &name, Some(rows), &[], vec![]).await?;
        Ok(())
    }

    /// Reloads one data table after another writer's commit.
    pub async fn reload(&mut self, kind: Kind) -> Result<()> {
        self.refresh_data(kind).await
    }

    /// Whether a record belongs to a post `pinpipe forget` erased.
    pub fn is_forgotten(&self, kind: Kind, bytes: &[u8]) -> bool {
        !self.ledger.inds.is_empty() && ledger::is_forgotten(kind, bytes, &self.ledger.inds)
    }

    /// Writes records of one kind, grouped by source partition in offset order, exactly once.
    pub async fn write<M: Mark>(&mut self, kind: Kind, sources: Vec<SourceRecords<M>>) -> Result<WriteReport> {
        let staged = self.stage(kind, sources).await?;
        let flight = self.start(staged)?;
        self.finish(flight).await
    }

    /// Starts writing a staged batch's data files (tasks); nothing is committed yet.
    pub fn start<M: Mark>(&self, staged: Staged<M>) -> Result<InFlight<M>> {
        let files = match &staged.frame {
            Some(frame) if frame.height() > 0 => {
                let name = self.id.table(staged.kind);
                let table = &self.data[&staged.kind];
                delta::start_frame_files(table, &name, frame)?
            }
            _ => delta::FilesInFlight::default(),
        };
        Ok(InFlight { staged, files, started: std::time::Instant::now() })
    }

    /// Commits a batch: quarantine first, then its rows and coverage in one commit. When
    /// another writer committed some of the same positions in between, the batch is staged
    /// again against the newer table and retried with backoff, `delta::COMMIT_ATTEMPTS` times at most.
    pub async fn finish<M: Mark>(&mut self, mut flight: InFlight<M>) -> Result<WriteReport> {
        let mut attempt = 1;
        loop {
            match self.try_finish(flight).await {
                Ok(report) => return Ok(report),
                Err((e, sources)) if e.is_conflict() && attempt < delta::COMMIT_ATTEMPTS => {
                    let kind = sources.kind;
                    let wait = std::time::Duration::from_millis(20 * (1 << attempt.min(8)) + jitter_ms());
                    tracing::warn!(kind = kind.as_str(), attempt, error = %e, wait_ms = wait.as_millis() as u64,
                        "commit conflict: staging the batch again");
                    tokio::time::sleep(wait).await;
                    self.refresh_kind(kind).await?;
                    let staged = self.stage(kind, sources.sources).await?;
                    flight = self.start(staged)?;
                    attempt += 1;
                }
                Err((e, batch)) if e.is_conflict() => {
                    return Err(crate::Error::Conflict {
                        table: self.id.table(batch.kind),
                        detail: format!("gave up after {} attempts ({e}); run it again once the other writer is done", delta::COMMIT_ATTEMPTS),
                    })
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// One commit attempt. Checks the batch against the tables as they are now (not as they
    /// were when it was staged: a pipelined writer's own previous commit, or another writer's,
    /// may have landed since), then commits the quarantine and the rows with the coverage
    /// computed from the current state. On failure, hands the batch back for a retry.
    async fn try_finish<M: Mark>(&mut self, flight: InFlight<M>) -> std::result::Result<WriteReport, (crate::Error, Batch<M>)> {
        let InFlight { staged, files, started } = flight;
        let Staged { kind, batch, report, frame, quarantine, covered } = staged;
        let result = async {
            // The quarantine is refreshed only for a batch that has entries for it: each
            // refresh lists the table's log.
            self.refresh_data(kind).await?;
            if !quarantine.is_empty() {
                self.refresh_quarantine().await?;
            }
            let d_name = self.id.table(kind);
            // A forget that wrote its ledger after this batch was staged may already have
            // deleted what it found: the batch is staged again without its posts, or they
            // would be committed after the delete and stay.
            if let Some(now) = ledger::reload(&self.root, &self.ledger).await? {
                let grew = !now.inds.is_subset(&self.ledger.inds);
                self.ledger = now;
                if grew {
                    return Err(crate::Error::Conflict {
                        table: d_name.clone(),
                        detail: "the forget ledger changed since the batch was staged".into(),
                    });
                }
            }
            let q_name = self.id.quarantine_table();
            let mut d_txns = Vec::new();
            let mut q_txns = Vec::new();
            let mut entries = Vec::new();
            let mut gaps_opened = 0;
            let mut q_held: Option<std::collections::HashSet<(String, String, String)>> = None;
            // Slots that sources of this batch are in are never given to another of them.
            let (mut d_plan, mut q_plan) = (SlotPlan::default(), SlotPlan::default());
            let app_ids: Vec<&str> = batch.sources.iter().map(|s| s.app_id.as_str()).collect();
            self.reserve_slots::<M>(Some(kind), &app_ids, &mut d_plan).await?;
            if !quarantine.is_empty() {
                self.reserve_slots::<M>(None, &app_ids, &mut q_plan).await?;
            }
            for (si, positions) in covered.iter().enumerate() {
                let app_id = &batch.sources[si].app_id;
                let d_now: Coverage<M> = self.coverage_in(Some(kind), app_id).await?;
                if let Some(p) = positions.iter().find(|p| d_now.holds(p)) {
                    return Err(crate::Error::Conflict { table: d_name.clone(), detail: format!("{app_id} position {p:?}") });
                }
                let (d_next, opened) = d_now.cover(positions);
                gaps_opened += opened;
                if quarantine.iter().any(|(owner, _, _)| *owner == si) {
                    let q_now: Coverage<M> = self.coverage_in(None, app_id).await?;
                    for (owner, position, entry) in &quarantine {
                        if *owner != si {
                            continue;
                        }
                        // Sequence numbers have no gaps to mark a hole below the quarantine's
                        // mark (a batch given up, then a later one that committed its
                        // quarantine and crashed): there the entry itself is looked up.
                        let held = q_now.holds(position)
                            && (position.offset().is_some() || {
                                if q_held.is_none() {
                                    q_held = Some(self.quarantine_positions(&q_name).await?);
                                }
                                q_held.as_ref().is_some_and(|h| {
                                    h.contains(&(entry.source.clone(), entry.partition.clone(), entry.position.clone()))
                                })
                            });
                        if !held {
                            entries.push(entry.clone());
                        }
                    }
                    q_txns.extend(self.coverage_txns(None, app_id, &q_now, &q_now.union(&d_next), &mut q_plan)?);
                }
                if opened > 0 {
                    tracing::warn!(table = %d_name, source = %app_id, gaps = ?d_next.gaps(), "offsets skipped: gap opened");
                }
                d_txns.extend(self.coverage_txns(Some(kind), app_id, &d_now, &d_next, &mut d_plan)?);
            }
            q_txns.extend(self.archive_moves(None, q_plan).await?);
            d_txns.extend(self.archive_moves(Some(kind), d_plan).await?);
            if !entries.is_empty() || !q_txns.is_empty() {
                let schema = delta::arrow_schema(&self.quarantine, &q_name)?;
                let now = chrono::Utc::now().timestamp_micros();
                let rows = (!entries.is_empty()).then(|| delta::quarantine_batch(&entries, schema, now)).transpose()?;
                delta::append(&mut self.quarantine, &q_name, rows, &q_txns, vec![]).await?;
            }
            #[cfg(any(test, feature = "fault-injection"))]
            {
                if self.faults.crash == Some(CrashPoint::AfterQuarantine) {
                    return Err(crate::Error::InjectedCrash);
                }
                if let Some((reached, resume)) = self.faults.pause.take() {
                    reached.notify_one();
                    resume.notified().await;
                }
            }
            let mut report = report.clone();
            report.gaps_opened = gaps_opened;
            let has_rows = frame.as_ref().is_some_and(|f| f.height() > 0);
            if has_rows || !d_txns.is_empty() {
                let quality = serde_json::to_value(&report.quality).unwrap_or_default();
                let meta = vec![(delta::QUALITY_KEY.to_string(), quality)];
                delta::append_files(self.data_mut(kind), &d_name, files, &d_txns, meta).await?;
            }
            #[cfg(any(test, feature = "fault-injection"))]
            if self.faults.crash == Some(CrashPoint::AfterData) {
                return Err(crate::Error::InjectedCrash);
            }
            Ok(report)
        }
        .await;
        match result {
            Ok(report) => {
                tracing::info!(
                    kind = kind.as_str(),
                    received = report.received,
                    tabled = report.tabled,
                    quarantined = report.quarantined,
                    already_present = report.skipped,
                    gaps_opened = report.gaps_opened,
                    write_s = started.elapsed().as_secs_f64(),
                    "batch written"
                );
                Ok(report)
            }
            Err(e) => Err((e, batch)),
        }
    }

    /// Drops records the data table already holds, decodes and cleans the rest. Nothing is
    /// decided for good here: `finish` checks the batch again against the tables it commits to.
    pub async fn stage<M: Mark>(&mut self, kind: Kind, sources: Vec<SourceRecords<M>>) -> Result<Staged<M>> {
        let mut report = WriteReport::default();
        let mut records: Vec<RawRecord> = Vec::new();
        let mut offsets: Vec<M> = Vec::new();
        let mut owner: Vec<usize> = Vec::new();
        let mut covered: Vec<Vec<M>> = Vec::with_capacity(sources.len());
        for (si, src) in sources.iter().enumerate() {
            report.received += src.records.len() as u64;
            let held: Coverage<M> = self.coverage_in(Some(kind), &src.app_id).await?;
            let mut positions = Vec::new();
            for (rec, off) in src.records.iter().zip(&src.offsets) {
                if held.holds(off) {
                    report.skipped += 1;
                    continue;
                }
                if self.is_forgotten(kind, &rec.bytes) {
                    report.forgotten += 1;
                    positions.push(off.clone());
                    continue;
                }
                records.push(rec.clone());
                offsets.push(off.clone());
                owner.push(si);
                positions.push(off.clone());
            }
            positions.extend(src.blanks.iter().filter(|b| !held.holds(b)).cloned());
            positions.sort();
            covered.push(positions);
        }
        let batch = Batch { kind, sources };
        if records.is_empty() {
            return Ok(Staged { kind, batch, report, frame: None, quarantine: vec![], covered });
        }
        // CPU-bound: let the runtime move other tasks (Parquet writers) off this thread.
        let (decoded, (frame, quality)) = tokio::task::block_in_place(|| {
            let decoded = clean::decode::decode(kind, &records)?;
            let cleaned = clean::clean(kind, &decoded)?;
            Ok::<_, polars::prelude::PolarsError>((decoded, cleaned))
        })?;
        let quarantine = decoded
            .quarantined
            .iter()
            .map(|(idx, entry)| (owner[*idx], offsets[*idx].clone(), entry.clone()))
            .collect();
        report.tabled = frame.height() as u64;
        report.quarantined = decoded.quarantined.len() as u64;
        report.quality = quality;
        Ok(Staged { kind, batch, report, frame: Some(frame), quarantine, covered })
    }
}


/// See `Tables::set_shard_idle_hours`.
pub const DEFAULT_SHARD_IDLE_HOURS: i64 = 24;

fn jitter_ms() -> u64 {
    use rand::Rng;
    rand::rng().random_range(0..20)
}

/// A batch as handed to `Tables::write`, kept so a commit that lost a race can stage it again.
pub struct Batch<M: Mark> {
    kind: Kind,
    sources: Vec<SourceRecords<M>>,
}

/// A batch whose data files are being written.
pub struct InFlight<M: Mark = i64> {
    staged: Staged<M>,
    files: delta::FilesInFlight,
    started: std::time::Instant,
}

/// A batch decoded and cleaned, ready for its two commits.
pub struct Staged<M: Mark = i64> {
    kind: Kind,
    batch: Batch<M>,
    report: WriteReport,
    frame: Option<polars::prelude::DataFrame>,
    /// Quarantine entries with their source (index into the batch) and position.
    quarantine: Vec<(usize, M, crate::record::QuarantineEntry)>,
    /// Per source: every position the batch brings that the data table did not hold when
    /// staged (records, quarantined ones included, and blank lines), ascending.
    covered: Vec<Vec<M>>,
}
