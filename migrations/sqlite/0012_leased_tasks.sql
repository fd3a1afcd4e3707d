-- The running tasks an agent has leased, oldest first. The server looks for stalled tasks
-- and counts its fleet's running tasks every few seconds: among the running tasks of real
-- servers, only the leased ones need reading row by row (for their lease's end and
-- deadline); those never started are found by their age (tasks_running_on_agents), and the
-- rest only counted. Without it, each look read every running task.
CREATE INDEX tasks_leased ON tasks(create_at) WHERE status = 'PROCESSING' AND simulated = FALSE AND lease_epoch > 0;
