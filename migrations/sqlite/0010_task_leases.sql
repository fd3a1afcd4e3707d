-- The node agent's leases: a fencing epoch that grows with every lease of a task (a report or
-- a renewal under an older one is refused), the server's backstop of the template timeout,
-- the tail of each task's output as its agent uploads it, and an index of the running tasks
-- of real servers, which the server ends when no agent picks them up or renews them in time.
ALTER TABLE tasks ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN deadline_at INTEGER;

CREATE TABLE task_output (
    project_id TEXT NOT NULL,
    task_id    TEXT NOT NULL,
    output     TEXT NOT NULL,
    update_at  INTEGER NOT NULL,
    PRIMARY KEY (project_id, task_id)
) WITHOUT ROWID;

CREATE INDEX tasks_running_on_agents ON tasks(create_at) WHERE status = 'PROCESSING' AND simulated = FALSE;
