-- litejobs schema, PostgreSQL flavour. Same tables, columns and meaning as ../sqlite.

CREATE TABLE projects (
    id        TEXT PRIMARY KEY,
    name      TEXT NOT NULL UNIQUE,
    create_at BIGINT NOT NULL
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    create_at     BIGINT NOT NULL
);

CREATE TABLE access_keys (
    access_key  TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    secret_key  TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    create_at   BIGINT NOT NULL
);
CREATE INDEX access_keys_by_user ON access_keys(user_id);

CREATE TABLE policies (
    name    TEXT PRIMARY KEY,
    actions TEXT NOT NULL,
    builtin BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE grants (
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    project_id  TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    policy_name TEXT NOT NULL REFERENCES policies(name) ON DELETE CASCADE,
    PRIMARY KEY (user_id, project_id, policy_name)
);

CREATE TABLE tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX tokens_by_expiry ON tokens(expires_at);

CREATE TABLE servers (
    project_id   TEXT NOT NULL,
    id           TEXT NOT NULL,
    name         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    sim_outcome  TEXT,
    cloud_server TEXT NOT NULL DEFAULT '{}',
    create_at    BIGINT NOT NULL,
    last_seen_at BIGINT,
    PRIMARY KEY (project_id, id)
);

CREATE TABLE jobs (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id     TEXT NOT NULL,
    id             TEXT NOT NULL,
    name           TEXT NOT NULL,
    user_name      TEXT NOT NULL,
    description    TEXT,
    type           TEXT NOT NULL,
    template_id    TEXT,
    status         TEXT NOT NULL,
    visible        BOOLEAN NOT NULL,
    is_reboot      BOOLEAN NOT NULL,
    abnormal_count BIGINT NOT NULL DEFAULT 0,
    pending_tasks  BIGINT NOT NULL,
    items          TEXT NOT NULL,
    create_at      BIGINT NOT NULL,
    update_at      BIGINT NOT NULL,
    deleted_at     BIGINT
);
CREATE UNIQUE INDEX jobs_by_project_id ON jobs(project_id, id);
CREATE INDEX jobs_by_create ON jobs(project_id, create_at, id);
CREATE INDEX jobs_by_update ON jobs(project_id, update_at, id);
CREATE INDEX jobs_by_name ON jobs(project_id, name, id);
CREATE INDEX jobs_by_status ON jobs(project_id, status, create_at, id);
CREATE INDEX jobs_by_type ON jobs(project_id, type, status, visible, create_at, id);
CREATE INDEX jobs_deleted ON jobs(deleted_at) WHERE deleted_at IS NOT NULL;

CREATE TABLE job_counts (
    project_id TEXT NOT NULL,
    status     TEXT NOT NULL,
    type       TEXT NOT NULL,
    visible    BOOLEAN NOT NULL,
    n          BIGINT NOT NULL,
    PRIMARY KEY (project_id, status, type, visible)
);

CREATE FUNCTION litejobs_count_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE job_counts SET n = n - 1
        WHERE project_id = OLD.project_id AND status = OLD.status
          AND type = OLD.type AND visible = OLD.visible;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO job_counts (project_id, status, type, visible, n)
        VALUES (NEW.project_id, NEW.status, NEW.type, NEW.visible, 1)
        ON CONFLICT (project_id, status, type, visible) DO UPDATE SET n = job_counts.n + 1;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_count_insert AFTER INSERT OR DELETE ON jobs
FOR EACH ROW EXECUTE FUNCTION litejobs_count_jobs();

CREATE TRIGGER jobs_count_update AFTER UPDATE OF status, type, visible, project_id ON jobs
FOR EACH ROW
WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.type IS DISTINCT FROM NEW.type
      OR OLD.visible IS DISTINCT FROM NEW.visible OR OLD.project_id IS DISTINCT FROM NEW.project_id)
EXECUTE FUNCTION litejobs_count_jobs();

CREATE TABLE tasks (
    id           TEXT PRIMARY KEY,
    project_id   TEXT NOT NULL,
    job_id       TEXT NOT NULL,
    position     BIGINT NOT NULL,
    server_id    TEXT NOT NULL,
    server_name  TEXT NOT NULL,
    simulated    BOOLEAN NOT NULL,
    status       TEXT NOT NULL,
    message      TEXT NOT NULL DEFAULT '',
    cloud_server TEXT NOT NULL DEFAULT '{}',
    create_at    BIGINT NOT NULL,
    update_at    BIGINT NOT NULL,
    lease_owner  TEXT,
    lease_until  BIGINT
);
CREATE INDEX tasks_by_job ON tasks(project_id, job_id, position);
CREATE INDEX tasks_due_simulated ON tasks(create_at) WHERE status = 'PROCESSING' AND simulated = TRUE;
CREATE INDEX tasks_pending_by_server ON tasks(project_id, server_id, create_at) WHERE status = 'PROCESSING';

CREATE TABLE idempotency_keys (
    project_id TEXT NOT NULL,
    token      TEXT NOT NULL,
    body_hash  TEXT NOT NULL,
    job_id     TEXT NOT NULL,
    create_at  BIGINT NOT NULL,
    PRIMARY KEY (project_id, token)
);
CREATE INDEX idempotency_by_age ON idempotency_keys(create_at);
