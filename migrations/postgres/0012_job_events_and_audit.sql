-- The live watch and the audit trail.
--
-- job_events: every change of a job (created, a task ended, finished, deleted), with the
-- job's list item as it was then and, for a task's end, that task. Watchers resume after the
-- last `seq` they saw. A sequence hands out `seq` before commit, so transactions may commit
-- out of `seq` order: readers hold back at a gap until it is filled or given up (see
-- src/watch.rs). Kept for a day.
CREATE TABLE job_events (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id TEXT NOT NULL,
    job_id     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    item       TEXT NOT NULL,
    task       TEXT,
    visible    BOOLEAN NOT NULL,
    at         BIGINT NOT NULL
);
CREATE INDEX job_events_by_project ON job_events(project_id, seq);
CREATE INDEX job_events_by_time ON job_events(at);

-- New events wake the watchers of every replica: one notification per statement, delivered
-- when its transaction commits.
CREATE FUNCTION litejobs_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('litejobs_events', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER job_events_notify AFTER INSERT ON job_events
FOR EACH STATEMENT EXECUTE FUNCTION litejobs_notify_events();

-- audit_log: every request that changed something, every denied or failed authentication,
-- and every administration command. `user_id` is 'unknown' when the caller was not
-- authenticated; `resources` is a JSON array of ids.
CREATE TABLE audit_log (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         BIGINT NOT NULL,
    project_id TEXT,
    user_id    TEXT NOT NULL,
    user_name  TEXT NOT NULL,
    access_key TEXT,
    action     TEXT NOT NULL,
    resources  TEXT NOT NULL,
    source     TEXT NOT NULL,
    request_id TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    status     BIGINT NOT NULL,
    error_code TEXT
);
CREATE INDEX audit_log_by_time ON audit_log(at);
