//! Batch records and their lines.

/// Groq's batch statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchStatus {
    Validating,
    Failed,
    InProgress,
    Finalizing,
    Completed,
    Expired,
    Cancelling,
    Cancelled,
}

impl BatchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validating => "validating",
            Self::Failed => "failed",
            Self::InProgress => "in_progress",
            Self::Finalizing => "finalizing",
            Self::Completed => "completed",
            Self::Expired => "expired",
            Self::Cancelling => "cancelling",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "validating" => Self::Validating,
            "failed" => Self::Failed,
            "in_progress" => Self::InProgress,
            "finalizing" => Self::Finalizing,
            "completed" => Self::Completed,
            "expired" => Self::Expired,
            "cancelling" => Self::Cancelling,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    /// The column holding the time the batch entered this status.
    pub(crate) fn timestamp_column(self) -> &'static str {
        match self {
            Self::Validating => "created_at",
            Self::Failed => "failed_at",
            Self::InProgress => "in_progress_at",
            Self::Finalizing => "finalizing_at",
            Self::Completed => "completed_at",
            Self::Expired => "expired_at",
            Self::Cancelling => "cancelling_at",
            Self::Cancelled => "cancelled_at",
        }
    }
}

/// A batch as stored (Groq's Batch object without `request_counts`, which come from the
/// lines).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchRecord {
    /// `batch_` + a lower-case ULID (time-ordered: listing pages by id).
    pub id: String,
    pub input_file_id: String,
    pub endpoint: String,
    pub completion_window: String,
    pub status: BatchStatus,
    /// JSON object text, as given.
    pub metadata: Option<String>,
    /// JSON list object text of validation errors.
    pub errors: Option<String>,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    /// Unix seconds, like every timestamp here.
    pub created_at: i64,
    pub expires_at: i64,
    pub in_progress_at: Option<i64>,
    pub finalizing_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub expired_at: Option<i64>,
    pub cancelling_at: Option<i64>,
    pub cancelled_at: Option<i64>,
    /// The organization whose key created it.
    pub org_id: String,
}

impl BatchRecord {
    /// A new batch in `validating`.
    pub fn new(
        id: String,
        input_file_id: String,
        endpoint: String,
        completion_window: String,
        window_secs: i64,
        metadata: Option<String>,
        now: i64,
    ) -> Self {
        Self {
            id,
            input_file_id,
            endpoint,
            completion_window,
            status: BatchStatus::Validating,
            metadata,
            errors: None,
            output_file_id: None,
            error_file_id: None,
            created_at: now,
            expires_at: now + window_secs,
            in_progress_at: None,
            finalizing_at: None,
            completed_at: None,
            failed_at: None,
            expired_at: None,
            cancelling_at: None,
            cancelled_at: None,
            org_id: crate::DEFAULT_ORG.to_string(),
        }
    }

    /// The same batch, owned by `org`.
    pub fn owned_by(mut self, org: &str) -> Self {
        self.org_id = org.to_string();
        self
    }
}

/// Where one input line stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineState {
    Pending,
    Running,
    /// Answered with 200: its result goes to the output file.
    Done,
    /// Answered with an error: its result goes to the error file.
    Failed,
    /// Not run before the completion window ended.
    Expired,
    /// Not run because the batch was cancelled.
    Cancelled,
}

impl LineState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "done" => Self::Done,
            "failed" => Self::Failed,
            "expired" => Self::Expired,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }
}

/// A validated input line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewLine {
    /// 1-based, as in validation errors.
    pub line_no: i64,
    pub custom_id: String,
    /// The request body (JSON text).
    pub body: String,
}

/// A line claimed by a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineTask {
    pub batch_id: String,
    pub line_no: i64,
    pub custom_id: String,
    pub body: String,
}

/// A line with an outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineResult {
    pub line_no: i64,
    pub custom_id: String,
    pub state: LineState,
    /// The result line of a done or failed line.
    pub result: Option<String>,
}

/// Groq's `request_counts`, plus what is still open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineCounts {
    pub total: i64,
    pub completed: i64,
    /// Failed, expired and cancelled lines.
    pub failed: i64,
    /// Pending or running.
    pub open: i64,
}
