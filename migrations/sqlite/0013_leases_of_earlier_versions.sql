-- A task an agent of a version before the leases' epochs (0010) had leased, and was running
-- when the service was upgraded, holds a lease (lease_owner, lease_until) under epoch 0,
-- which the service reads as "never leased": it would end the task as never picked up while
-- the agent still runs it. Such a lease is the task's first: epoch 1.
UPDATE tasks SET lease_epoch = 1
WHERE status = 'PROCESSING' AND simulated = FALSE AND lease_epoch = 0
  AND lease_owner IS NOT NULL;
