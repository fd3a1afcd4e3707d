-- The node agent's leases: a fencing epoch that grows with every lease of a task (a report or
-- a renewal under an older one is refused), the server's backstop of the template timeout,
-- the tail of each task's output as its agent uploads it, and an index of the running tasks
-- of real servers, which the server ends when no agent picks them up or renews them in time.
ALTER TABLE tasks ADD COLUMN lease_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN deadline_at BIGINT;

CREATE TABLE task_output (
    project_id TEXT NOT NULL,
    task_id    TEXT NOT NULL,
    output     TEXT NOT NULL,
    update_at  BIGINT NOT NULL,
    PRIMARY KEY (project_id, task_id)
);

CREATE INDEX tasks_running_on_agents ON tasks(create_at) WHERE status = 'PROCESSING' AND simulated = FALSE;

-- New tasks wake the agents waiting for their servers, on every replica: one notification
-- per (project, server) of a statement's new tasks, delivered when its transaction commits.
CREATE FUNCTION litejobs_notify_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('litejobs_tasks', project_id || ' ' || server_id)
    FROM (SELECT DISTINCT project_id, server_id FROM new_rows) AS servers;
    RETURN NULL;
END;
$$;

CREATE TRIGGER tasks_notify_insert AFTER INSERT ON tasks
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION litejobs_notify_tasks();
