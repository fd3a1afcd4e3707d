-- The live watch and the audit trail.
--
-- job_events: every change of a job (created, a task ended, finished, deleted), in the order
-- the changes were committed, with the job's list item as it was then and, for a task's
-- end, that task. Watchers resume after the last `seq` they saw. Kept for a day.
CREATE TABLE job_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id TEXT NOT NULL,
    job_id     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    item       TEXT NOT NULL,
    task       TEXT,
    visible    BOOLEAN NOT NULL,
    at         INTEGER NOT NULL
);
CREATE INDEX job_events_by_project ON job_events(project_id, seq);
CREATE INDEX job_events_by_time ON job_events(at);

-- audit_log: every request that changed something, every denied or failed authentication,
-- and every administration command. `user_id` is 'unknown' when the caller was not
-- authenticated; `resources` is a JSON array of ids.
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    project_id TEXT,
    user_id    TEXT NOT NULL,
    user_name  TEXT NOT NULL,
    access_key TEXT,
    action     TEXT NOT NULL,
    resources  TEXT NOT NULL,
    source     TEXT NOT NULL,
    request_id TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    status     INTEGER NOT NULL,
    error_code TEXT
);
CREATE INDEX audit_log_by_time ON audit_log(at);
