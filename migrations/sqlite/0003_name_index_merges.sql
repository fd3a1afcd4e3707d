-- Background merges (see `run_name_index_merges`) combine the name index's segments as soon as
-- two share a level, instead of four: each segment is one more b-tree that a name search
-- looks every trigram up in. The setting is kept in the index's own configuration.
INSERT INTO jobs_name_fts (jobs_name_fts, rank) VALUES ('usermerge', 2);
