-- Names holding a pattern of four characters or more are found through their 4-grams: a GIN
-- index of the set of each lower-cased name's 4-character substrings, asked for the names
-- whose set holds all of the pattern's. pg_trgm's index (which stays, for three-character
-- patterns) keeps no positions either, but with trigrams the candidates are every name
-- holding each trigram of the pattern somewhere: some 200 rows read from the table and
-- checked for one hex-digit pattern among two million names, where 4-grams leave a few.
CREATE FUNCTION litejobs_name_grams(t TEXT) RETURNS TEXT[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT COALESCE(array_agg(DISTINCT substr(t, i, 4)), '{}')
    FROM generate_series(1, length(t) - 3) AS i
$$;

CREATE INDEX jobs_name_grams ON jobs USING gin (litejobs_name_grams(lower(name)));
