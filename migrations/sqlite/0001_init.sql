-- litejobs schema, SQLite flavour. The PostgreSQL flavour in ../postgres keeps the same
-- tables, columns and meaning.

CREATE TABLE projects (
    id        TEXT PRIMARY KEY NOT NULL,
    name      TEXT NOT NULL UNIQUE,
    create_at INTEGER NOT NULL
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    create_at     INTEGER NOT NULL
);

CREATE TABLE access_keys (
    access_key  TEXT PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    secret_key  TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    create_at   INTEGER NOT NULL
);
CREATE INDEX access_keys_by_user ON access_keys(user_id);

CREATE TABLE policies (
    name    TEXT PRIMARY KEY NOT NULL,
    actions TEXT NOT NULL,          -- JSON array of action patterns
    builtin INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE grants (
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    project_id  TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    policy_name TEXT NOT NULL REFERENCES policies(name) ON DELETE CASCADE,
    PRIMARY KEY (user_id, project_id, policy_name)
);

CREATE TABLE tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX tokens_by_expiry ON tokens(expires_at);

CREATE TABLE servers (
    project_id   TEXT NOT NULL,
    id           TEXT NOT NULL,
    name         TEXT NOT NULL,
    kind         TEXT NOT NULL,     -- 'agent' or 'simulated'
    sim_outcome  TEXT,              -- simulated only: 'SUCCESS', 'FAILED' or 'RANDOM'
    cloud_server TEXT NOT NULL DEFAULT '{}',
    create_at    INTEGER NOT NULL,
    last_seen_at INTEGER,
    PRIMARY KEY (project_id, id)
);

CREATE TABLE jobs (
    seq            INTEGER PRIMARY KEY,
    project_id     TEXT NOT NULL,
    id             TEXT NOT NULL,
    name           TEXT NOT NULL,
    user_name      TEXT NOT NULL,
    description    TEXT,
    type           TEXT NOT NULL,
    template_id    TEXT,
    status         TEXT NOT NULL,
    visible        INTEGER NOT NULL,
    is_reboot      INTEGER NOT NULL,
    abnormal_count INTEGER NOT NULL DEFAULT 0,
    pending_tasks  INTEGER NOT NULL,
    items          TEXT NOT NULL,   -- JSON array of the request's items
    create_at      INTEGER NOT NULL,
    update_at      INTEGER NOT NULL,
    deleted_at     INTEGER
);
CREATE UNIQUE INDEX jobs_by_project_id ON jobs(project_id, id);
CREATE INDEX jobs_by_create ON jobs(project_id, create_at, id);
CREATE INDEX jobs_by_update ON jobs(project_id, update_at, id);
CREATE INDEX jobs_by_name ON jobs(project_id, name, id);
CREATE INDEX jobs_by_status ON jobs(project_id, status, create_at, id);
CREATE INDEX jobs_by_type ON jobs(project_id, type, status, visible, create_at, id);
CREATE INDEX jobs_deleted ON jobs(deleted_at) WHERE deleted_at IS NOT NULL;

-- Exact counts per (project, status, type, visible), kept by triggers in the same
-- transaction as the change, so list totals never scan the jobs.
CREATE TABLE job_counts (
    project_id TEXT NOT NULL,
    status     TEXT NOT NULL,
    type       TEXT NOT NULL,
    visible    INTEGER NOT NULL,
    n          INTEGER NOT NULL,
    PRIMARY KEY (project_id, status, type, visible)
) WITHOUT ROWID;

CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO job_counts (project_id, status, type, visible, n)
    VALUES (NEW.project_id, NEW.status, NEW.type, NEW.visible, 1)
    ON CONFLICT (project_id, status, type, visible) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET n = n - 1
    WHERE project_id = OLD.project_id AND status = OLD.status
      AND type = OLD.type AND visible = OLD.visible;
END;

CREATE TRIGGER jobs_count_update AFTER UPDATE OF status, type, visible, project_id ON jobs
WHEN OLD.status IS NOT NEW.status OR OLD.type IS NOT NEW.type
  OR OLD.visible IS NOT NEW.visible OR OLD.project_id IS NOT NEW.project_id
BEGIN
    UPDATE job_counts SET n = n - 1
    WHERE project_id = OLD.project_id AND status = OLD.status
      AND type = OLD.type AND visible = OLD.visible;
    INSERT INTO job_counts (project_id, status, type, visible, n)
    VALUES (NEW.project_id, NEW.status, NEW.type, NEW.visible, 1)
    ON CONFLICT (project_id, status, type, visible) DO UPDATE SET n = n + 1;
END;

CREATE TABLE tasks (
    id           TEXT PRIMARY KEY NOT NULL,
    project_id   TEXT NOT NULL,
    job_id       TEXT NOT NULL,
    position     INTEGER NOT NULL,
    server_id    TEXT NOT NULL,
    server_name  TEXT NOT NULL,
    simulated    INTEGER NOT NULL,
    status       TEXT NOT NULL,
    message      TEXT NOT NULL DEFAULT '',
    cloud_server TEXT NOT NULL DEFAULT '{}',
    create_at    INTEGER NOT NULL,
    update_at    INTEGER NOT NULL,
    lease_owner  TEXT,
    lease_until  INTEGER
);
CREATE INDEX tasks_by_job ON tasks(project_id, job_id, position);
CREATE INDEX tasks_due_simulated ON tasks(create_at) WHERE status = 'PROCESSING' AND simulated = TRUE;
CREATE INDEX tasks_pending_by_server ON tasks(project_id, server_id, create_at) WHERE status = 'PROCESSING';

CREATE TABLE idempotency_keys (
    project_id TEXT NOT NULL,
    token      TEXT NOT NULL,
    body_hash  TEXT NOT NULL,
    job_id     TEXT NOT NULL,
    create_at  INTEGER NOT NULL,
    PRIMARY KEY (project_id, token)
);
CREATE INDEX idempotency_by_age ON idempotency_keys(create_at);
