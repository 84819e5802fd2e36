//! The batch worker's lines in flight, and the lines whose task ended without settling them.
//!
//! The worker renews the lease of every line its replica holds, so a line must never be held
//! without a task running it: its lease would be renewed forever and its batch would never
//! finish. A line's task settles it by storing its result (or by finding that another worker
//! took it over). A task that panicked, or whose result could not be stored, leaves an
//! [`Orphan`] here, and the worker settles that itself.

use std::collections::HashMap;
use std::future::Future;

use peregrine_store::LineTask;
use tokio::task::{Id, JoinError, JoinSet};

/// A held line that its task left unsettled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Orphan {
    /// The task panicked. The line gets a failed result: running it again would likely
    /// panic again, and a batch must finish.
    Panicked(LineTask),
    /// Its result could not be stored (a store error). The line goes back to pending, to
    /// run again here or elsewhere.
    Unstored(LineTask),
}

/// The tasks running lines, each known by the line it runs.
pub(crate) struct InFlight {
    set: JoinSet<bool>,
    lines: HashMap<Id, LineTask>,
    orphans: Vec<Orphan>,
}

impl InFlight {
    pub fn new() -> Self {
        Self {
            set: JoinSet::new(),
            lines: HashMap::new(),
            orphans: Vec::new(),
        }
    }

    /// Lines whose task is still running (the engine slots they may take).
    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Runs `line` with `run`, whose output says whether it settled the line.
    pub fn spawn<F>(&mut self, line: LineTask, run: F)
    where
        F: Future<Output = bool> + Send + 'static,
    {
        let id = self.set.spawn(run).id();
        self.lines.insert(id, line);
    }

    /// Waits for one task to end and notes how (call only when not empty).
    pub async fn wait_any(&mut self) {
        if let Some(ended) = self.set.join_next_with_id().await {
            self.note(ended);
        }
    }

    /// Notes every task that has ended and hands over the orphans, to be settled.
    pub fn take_orphans(&mut self) -> Vec<Orphan> {
        while let Some(ended) = self.set.try_join_next_with_id() {
            self.note(ended);
        }
        std::mem::take(&mut self.orphans)
    }

    /// Keeps an orphan that could not be settled yet, for the next [`Self::take_orphans`].
    pub fn keep(&mut self, orphan: Orphan) {
        self.orphans.push(orphan);
    }

    /// Cancels every running task (their lines are given back by the caller).
    pub async fn shutdown(&mut self) {
        self.set.shutdown().await;
        self.lines.clear();
    }

    fn note(&mut self, ended: Result<(Id, bool), JoinError>) {
        let (id, orphan): (Id, fn(LineTask) -> Orphan) = match ended {
            Ok((id, true)) => {
                self.lines.remove(&id);
                return;
            }
            Ok((id, false)) => (id, Orphan::Unstored),
            // A cancelled task's line is given back with all the others on shutdown.
            Err(e) if e.is_cancelled() => {
                self.lines.remove(&e.id());
                return;
            }
            Err(e) => (e.id(), Orphan::Panicked),
        };
        if let Some(line) = self.lines.remove(&id) {
            self.orphans.push(orphan(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: i64) -> LineTask {
        LineTask {
            batch_id: "batch_1".into(),
            line_no: n,
            custom_id: format!("r{n}"),
            body: "{}".into(),
        }
    }

    async fn drain(f: &mut InFlight) -> Vec<Orphan> {
        while !f.is_empty() {
            f.wait_any().await;
        }
        let mut got = f.take_orphans();
        got.sort_by_key(|o| match o {
            Orphan::Panicked(l) | Orphan::Unstored(l) => l.line_no,
        });
        got
    }

    #[tokio::test]
    async fn a_settled_line_leaves_nothing_and_an_unsettled_one_is_an_orphan() {
        let mut f = InFlight::new();
        f.spawn(line(0), async { true });
        f.spawn(line(1), async { false });
        f.spawn(line(2), async { panic!("the engine fell over") });
        assert_eq!(f.len(), 3);
        let got = drain(&mut f).await;
        assert_eq!(
            got,
            vec![Orphan::Unstored(line(1)), Orphan::Panicked(line(2))]
        );
        assert!(f.lines.is_empty(), "every ended task's line is forgotten");
    }

    #[tokio::test]
    async fn an_orphan_kept_back_comes_again_until_settled() {
        let mut f = InFlight::new();
        f.spawn(line(3), async { false });
        let got = drain(&mut f).await;
        assert_eq!(got, vec![Orphan::Unstored(line(3))]);
        f.keep(got[0].clone());
        assert_eq!(f.take_orphans(), vec![Orphan::Unstored(line(3))]);
        assert!(f.take_orphans().is_empty());
    }

    #[tokio::test]
    async fn shut_down_tasks_are_no_orphans() {
        let mut f = InFlight::new();
        f.spawn(line(4), std::future::pending());
        f.shutdown().await;
        assert!(f.is_empty() && f.take_orphans().is_empty() && f.lines.is_empty());
    }
}
