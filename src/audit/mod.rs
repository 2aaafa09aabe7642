//! The audit log: typed events for every FHIR interaction (denies and break-glass included),
//! token issue/refresh/revoke/exchange, sign-in and launch, appended durably to a hash chain
//! (each record holds the previous record's hash). Appends are group-committed by one writer
//! task per process: a caller waits until its record is durable. `verify` walks the chain and
//! names the first record that was edited, deleted or moved.

pub mod checkpoint;
pub mod fhir;
pub mod limiter;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::domain::audit::{GENESIS_HASH, chain_hash};
use crate::domain::nhs_number::redact_other_nhs_numbers;
use crate::store::{AuditDraft, AuditRecord, DurableStore, StoreError};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditKind {
    FhirRead,
    FhirVread,
    FhirHistory,
    FhirSearch,
    FhirCreate,
    FhirUpdate,
    AvailabilityCheck,
    TokenIssue,
    TokenRefresh,
    TokenRevoke,
    TokenExchange,
    SignIn,
    SignOut,
    Launch,
}

impl AuditKind {
    /// FHIR AuditEvent.action: C R U D E.
    pub fn action(self) -> &'static str {
        match self {
            Self::FhirCreate => "C",
            Self::FhirRead | Self::FhirVread | Self::FhirHistory | Self::FhirSearch | Self::AvailabilityCheck => "R",
            Self::FhirUpdate => "U",
            Self::TokenRevoke => "D",
            Self::TokenIssue
            | Self::TokenRefresh
            | Self::TokenExchange
            | Self::SignIn
            | Self::SignOut
            | Self::Launch => "E",
        }
    }
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditOutcome {
    Success,
    /// Refused by scope, compartment or policy.
    Denied,
    /// The request was bad or something failed.
    Failed,
}

/// Who acted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// Platform subject (`provider:subject`) or, for a system, its client id.
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    /// ODS code of the actor's organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// What was acted on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub resource_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub kind: AuditKind,
    pub outcome: AuditOutcome,
    pub actor: Actor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// The patient the event concerns (NHS number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    /// Why (deciding rule, error, break-glass reason, query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AuditEvent {
    pub fn new(kind: AuditKind, outcome: AuditOutcome, actor: Actor) -> Self {
        Self { kind, outcome, actor, target: None, patient: None, detail: None }
    }
    pub fn target(mut self, resource_type: &str, id: Option<&str>, version: Option<i64>) -> Self {
        self.target = Some(Target { resource_type: resource_type.to_owned(), id: id.map(str::to_owned), version });
        self
    }
    pub fn patient(mut self, patient: Option<&str>) -> Self {
        self.patient = patient.map(str::to_owned);
        self
    }
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// The audit record could not be written; the request it describes must not succeed silently.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the audit writer has stopped")]
    WriterGone,
}

type Pending = (AuditDraft, oneshot::Sender<Result<i64, String>>);

/// The process's audit writer.
#[derive(Debug)]
pub struct AuditLog {
    sender: mpsc::Sender<Pending>,
    clock: Arc<dyn crate::clock::Clock>,
}

const BATCH: usize = 256;
/// How many times the writer lets other ready tasks run before it commits, while each pass
/// brought more records.
const GATHER_PASSES: usize = 4;

/// Group commit that groups: under load a request's record arrives every few microseconds while a
/// commit takes tens, and a writer that committed whatever was queued the moment it woke wrote
/// one record per transaction (measured: 1.07 records per commit at 8 500 audited reads/s). So
/// before committing it yields, letting the tasks that are ready run and submit their records,
/// and takes what they queued, as long as a pass brings more. Idle, no other task is ready and the
/// yield returns at once: a lone record waits for nothing.
async fn gather(receiver: &mut mpsc::Receiver<Pending>, batch: &mut Vec<Pending>) {
    for _ in 0..GATHER_PASSES {
        if batch.len() >= BATCH {
            return;
        }
        tokio::task::yield_now().await;
        let before = batch.len();
        while batch.len() < BATCH {
            match receiver.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        if batch.len() == before {
            return;
        }
    }
}

impl AuditLog {
    /// Starts the writer task on the current runtime.
    pub fn start(store: Arc<dyn DurableStore>, clock: Arc<dyn crate::clock::Clock>) -> Arc<Self> {
        let (sender, mut receiver) = mpsc::channel::<Pending>(4096);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while receiver.recv_many(&mut batch, BATCH).await > 0 {
                gather(&mut receiver, &mut batch).await;
                // the drafts move to the store and the replies stay: no copy of each record's content
                let (drafts, replies): (Vec<AuditDraft>, Vec<_>) = batch.drain(..).unzip();
                let started = std::time::Instant::now();
                let result = store.append_audit(&drafts).await;
                crate::telemetry::audit_append(drafts.len(), started.elapsed(), result.is_ok());
                crate::telemetry::audit_queue_depth(receiver.len());
                for (i, reply) in replies.into_iter().enumerate() {
                    let answer = match &result {
                        Ok(seqs) => seqs.get(i).copied().ok_or_else(|| "no sequence number".to_owned()),
                        Err(e) => Err(e.to_string()),
                    };
                    let _ = reply.send(answer);
                }
            }
        });
        Arc::new(Self { sender, clock })
    }

    /// Appends `event` and waits until it is durable. Returns its sequence number.
    pub async fn record(&self, event: &AuditEvent) -> Result<i64, AuditError> {
        let answer = self.submit(event).await?;
        Self::durable(answer).await
    }

    /// Appends every event (one group commit when the writer is idle) and waits until all are
    /// durable: for a response that discloses several patients, one record each.
    pub async fn record_all(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
        let mut answers = Vec::with_capacity(events.len());
        for event in events {
            answers.push(self.submit(event).await?);
        }
        for answer in answers {
            Self::durable(answer).await?;
        }
        Ok(())
    }

    async fn submit(&self, event: &AuditEvent) -> Result<oneshot::Receiver<Result<i64, String>>, AuditError> {
        // a detail may echo what a caller sent: it never names a patient other than the one the
        // record is filed against
        let redacted;
        let event = match &event.detail {
            Some(detail) => {
                let clean = redact_other_nhs_numbers(detail, event.patient.as_deref());
                if clean == *detail {
                    event
                } else {
                    redacted = AuditEvent { detail: Some(clean), ..event.clone() };
                    &redacted
                }
            }
            None => event,
        };
        let data = serde_json::to_string(event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let draft = AuditDraft {
            time: self.clock.now_millis(),
            patient: event.patient.clone(),
            actor: event.actor.subject.clone(),
            data,
        };
        let (reply, answer) = oneshot::channel();
        self.sender.send((draft, reply)).await.map_err(|_| AuditError::WriterGone)?;
        Ok(answer)
    }

    async fn durable(answer: oneshot::Receiver<Result<i64, String>>) -> Result<i64, AuditError> {
        match answer.await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(e)) => Err(AuditError::Store(StoreError::Unavailable(e))),
            Err(_) => Err(AuditError::WriterGone),
        }
    }

    /// Appends and logs (instead of failing) when the log cannot be written: for events about
    /// requests that have already been answered, such as a failed sign-in.
    pub async fn record_or_log(&self, event: &AuditEvent) {
        if let Err(e) = self.record(event).await {
            tracing::error!(error = %e, kind = ?event.kind, "audit record could not be written");
        }
    }
}

/// The result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Every record links to the one before, hashes match, sequence numbers are contiguous.
    Intact { records: i64, head: String },
    /// The first record that does not fit, and why.
    Broken { seq: i64, reason: String },
}

/// Checks that a record is filed (its `patient` and `actor` columns, which auditors search by)
/// under what its hashed content says: a record re-filed under another patient is caught even
/// though its hashed content is intact.
pub fn filed_as_hashed(record: &AuditRecord) -> Result<(), String> {
    let event: AuditEvent =
        serde_json::from_str(&record.data).map_err(|_| "its content is not an audit event".to_owned())?;
    if record.patient != event.patient {
        return Err(format!(
            "it is filed under patient {} but its hashed content is about {} (re-filed)",
            record.patient.as_deref().unwrap_or("(none)"),
            event.patient.as_deref().unwrap_or("(none)")
        ));
    }
    if record.actor != event.actor.subject {
        return Err(format!(
            "it is filed under actor {} but its hashed content names {} (re-filed)",
            record.actor.as_deref().unwrap_or("(none)"),
            event.actor.subject.as_deref().unwrap_or("(none)")
        ));
    }
    Ok(())
}

/// Whether one record verifies on its own: its content matches its hash (over the link to the
/// record before it, its sequence number and time) and it is filed as its content says. Its place
/// in the whole chain is what `audit verify` checks.
pub fn record_verifies(record: &AuditRecord) -> bool {
    chain_hash(&record.prev_hash, record.seq, record.time, &record.data) == record.hash
        && filed_as_hashed(record).is_ok()
}

/// Walks the whole chain from the first record.
pub async fn verify(store: &dyn DurableStore) -> Result<Verification, StoreError> {
    let mut expected_seq = 1;
    let mut prev = GENESIS_HASH.to_owned();
    let mut after = 0;
    loop {
        let page = store.audit_records(after, 1000).await?;
        if page.is_empty() {
            return Ok(Verification::Intact { records: expected_seq - 1, head: prev });
        }
        for record in &page {
            if record.seq != expected_seq {
                let reason = if record.seq > expected_seq {
                    format!("record {expected_seq} is missing (deleted)")
                } else {
                    "sequence numbers go backwards".to_owned()
                };
                return Ok(Verification::Broken { seq: expected_seq, reason });
            }
            if record.prev_hash != prev {
                return Ok(Verification::Broken {
                    seq: record.seq,
                    reason: "it does not link to the record before it (reordered or replaced)".into(),
                });
            }
            if chain_hash(&record.prev_hash, record.seq, record.time, &record.data) != record.hash {
                return Ok(Verification::Broken {
                    seq: record.seq,
                    reason: "its content does not match its hash (edited)".into(),
                });
            }
            if let Err(reason) = filed_as_hashed(record) {
                return Ok(Verification::Broken { seq: record.seq, reason });
            }
            prev = record.hash.clone();
            expected_seq += 1;
            after = record.seq;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(n: i64) -> Pending {
        let draft = AuditDraft { time: n, patient: None, actor: None, data: String::new() };
        (draft, oneshot::channel().0)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_writer_gathers_what_ready_tasks_are_about_to_submit_into_one_commit() {
        let (sender, mut receiver) = mpsc::channel::<Pending>(64);
        for n in 1..=10 {
            let sender = sender.clone();
            tokio::spawn(async move { sender.send(pending(n)).await.unwrap() });
        }
        sender.send(pending(0)).await.unwrap();
        let mut batch = Vec::new();
        assert_eq!(receiver.recv_many(&mut batch, BATCH).await, 1, "only the first is queued yet");
        gather(&mut receiver, &mut batch).await;
        let times: Vec<i64> = batch.iter().map(|(d, _)| d.time).collect();
        assert_eq!(times, (0..=10).collect::<Vec<_>>(), "the ten ready tasks' records join, in order");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_idle_writer_commits_a_lone_record_without_waiting_and_a_full_batch_at_once() {
        let (sender, mut receiver) = mpsc::channel::<Pending>(BATCH * 2);
        sender.send(pending(0)).await.unwrap();
        let mut batch = Vec::new();
        receiver.recv_many(&mut batch, BATCH).await;
        let waited = tokio::time::timeout(std::time::Duration::from_secs(5), gather(&mut receiver, &mut batch)).await;
        assert!(waited.is_ok() && batch.len() == 1, "nothing else is ready: the lone record goes as it is");

        for n in 0..(BATCH as i64 + 10) {
            sender.send(pending(n)).await.unwrap();
        }
        let mut full = Vec::new();
        receiver.recv_many(&mut full, BATCH).await;
        gather(&mut receiver, &mut full).await;
        assert_eq!(full.len(), BATCH, "a batch never grows past BATCH");
        assert_eq!(receiver.len(), 10, "the rest wait for the next commit");
    }
}
