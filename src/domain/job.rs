//! The job and task state vocabulary.

use super::Invalid;

/// Status of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    Processing,
    Finished,
    Deleted,
}

impl JobStatus {
    pub const ALL: [JobStatus; 3] = [Self::Processing, Self::Finished, Self::Deleted];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Processing => "PROCESSING",
            Self::Finished => "FINISHED",
            Self::Deleted => "DELETED",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| Invalid::new("status must be one of PROCESSING, FINISHED, DELETED"))
    }
}

/// Status of one task (a job on one server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    Processing,
    Success,
    Failed,
    Skipped,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Processing => "PROCESSING",
            Self::Success => "SUCCESS",
            Self::Failed => "FAILED",
            Self::Skipped => "SKIPPED",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw {
            "PROCESSING" => Ok(Self::Processing),
            "SUCCESS" => Ok(Self::Success),
            "FAILED" => Ok(Self::Failed),
            "SKIPPED" => Ok(Self::Skipped),
            _ => Err(Invalid::new(
                "task status must be one of SUCCESS, FAILED, SKIPPED",
            )),
        }
    }

    /// A terminal task never changes again.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Processing)
    }
}
