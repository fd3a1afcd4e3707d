-- The name indexes lead with the project: a search finds the project's names holding the
-- pattern inside the index, where the indexes of names alone gave every project's, each then
-- read from the table to be dropped, or a plan had to join the index with the project's whole
-- range of another one. A pattern common in other projects (`diagnosis`, in a fifth of two
-- million names) no longer costs a small project the reading of hundreds of thousands of rows,
-- and one plan fits every search: the list's name statements keep their generic plan, made once
-- per connection, instead of being planned at every request (planning cost PostgreSQL three
-- times what running a selective search does). `btree_gin` gives the text column its GIN
-- operator class; like `pg_trgm`, it is a trusted extension that the database owner may create.
CREATE EXTENSION IF NOT EXISTS btree_gin;

DROP INDEX jobs_name_grams;
CREATE INDEX jobs_name_grams ON jobs
    USING gin (project_id, litejobs_name_grams(lower(name)))
    WITH (gin_pending_list_limit = 64);

DROP INDEX jobs_name_trgm;
CREATE INDEX jobs_name_trgm ON jobs
    USING gin (project_id, lower(name) gin_trgm_ops)
    WITH (gin_pending_list_limit = 64);
