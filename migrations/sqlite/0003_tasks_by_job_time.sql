-- A job's tasks are found by the job's create_at (which every task of the job shares) before
-- its id: new tasks then go to the end of this index, where the job's random UUID sent them
-- to a random page of the old one at every create.
CREATE INDEX tasks_by_job_time ON tasks(project_id, create_at, job_id, position);
DROP INDEX tasks_by_job;
