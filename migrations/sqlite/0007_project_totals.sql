-- The number of a project's jobs, whatever their status, type or visibility: the total of a
-- list without those filters, read from one row rather than summed over every counter of
-- the project. Kept by triggers in the transaction that adds or removes a job.
CREATE TABLE job_totals (
    project_id TEXT PRIMARY KEY,
    n          INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO job_totals (project_id, n)
SELECT project_id, SUM(n) FROM job_counts GROUP BY project_id;

CREATE TRIGGER jobs_total_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO job_totals (project_id, n) VALUES (NEW.project_id, 1)
    ON CONFLICT (project_id) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_total_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_totals SET n = n - 1 WHERE project_id = OLD.project_id;
END;

CREATE TRIGGER jobs_total_update AFTER UPDATE OF project_id ON jobs
WHEN OLD.project_id IS NOT NEW.project_id
BEGIN
    UPDATE job_totals SET n = n - 1 WHERE project_id = OLD.project_id;
    INSERT INTO job_totals (project_id, n) VALUES (NEW.project_id, 1)
    ON CONFLICT (project_id) DO UPDATE SET n = n + 1;
END;
