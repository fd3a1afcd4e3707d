-- The name index is a set of segments that every search reads one by one. Inserts merge
-- them four at a level at a time (FTS5's automerge); when the server has no creates to
-- commit it merges further, any two segments of a level (the 'merge' command, whose
-- threshold this sets), so that a search reads a few segments rather than a score.
INSERT INTO jobs_name_fts (jobs_name_fts, rank) VALUES ('usermerge', 2);
