"""The schema and the functions the PostgreSQL storage runs: one statement per operation.

Each operation of the shared-storage protocol is one call of a PL/pgSQL function (one
round trip, one transaction): flush, propose, acquire. Every function locks the breaker's
row (``FOR UPDATE``), so concurrent flushes, proposals and permit requests of one breaker
are serialised by the server. Times come from the server (``clock_timestamp()``, as epoch
seconds); what goes back to a process is relative (``retry_in``, ``opened_ago``).

Identifiers (schema, table) are validated by the storage and double-quoted here; every
value is a bound parameter.
"""

from __future__ import annotations

__all__ = ["SCHEMA_VERSION", "ddl", "names", "quote"]

SCHEMA_VERSION = 2

_TEMPLATE = r"""
CREATE SCHEMA IF NOT EXISTS {schema};

CREATE TABLE IF NOT EXISTS {schema}.{meta} (
    key text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO {schema}.{meta} (key, value) VALUES ('schema_version', '{version}')
    ON CONFLICT (key) DO NOTHING;

CREATE TABLE IF NOT EXISTS {schema}.{table} (
    name text PRIMARY KEY,
    status text NOT NULL DEFAULT 'closed',
    version bigint NOT NULL DEFAULT 0,
    trips integer NOT NULL DEFAULT 0,
    reason text NOT NULL DEFAULT '',
    opened_at double precision,
    retry_at double precision,
    consecutive_failures bigint NOT NULL DEFAULT 0,
    half_open_successes integer NOT NULL DEFAULT 0,
    rate_head bigint NOT NULL DEFAULT 0,
    origin text NOT NULL DEFAULT '',
    batches jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    expires_at double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS {expires_index} ON {schema}.{table} (expires_at);

CREATE TABLE IF NOT EXISTS {schema}.{buckets} (
    name text NOT NULL,
    kind "char" NOT NULL,
    idx bigint NOT NULL,
    calls bigint NOT NULL DEFAULT 0,
    failures bigint NOT NULL DEFAULT 0,
    slow bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (name, kind, idx)
);

CREATE TABLE IF NOT EXISTS {schema}.{probes} (
    name text NOT NULL,
    token text NOT NULL,
    lease_until double precision NOT NULL,
    PRIMARY KEY (name, token)
);

-- The record as a process sees it: times relative to now, windows newest bucket first.
CREATE OR REPLACE FUNCTION {schema}.{record}(
    p_name text, p_now double precision, p_fwidth double precision,
    p_rwidth double precision, p_rcalls bigint, p_n integer
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    r {schema}.{table}%ROWTYPE;
    fw jsonb := '[]'::jsonb;
    rw jsonb := '[]'::jsonb;
    fhead bigint;
    rhead bigint;
    live integer;
BEGIN
    SELECT * INTO r FROM {schema}.{table} WHERE name = p_name;
    SELECT count(*) INTO live FROM {schema}.{probes}
        WHERE name = p_name AND lease_until > p_now;
    IF r.name IS NULL THEN
        RETURN jsonb_build_object('status', 'closed', 'version', 0, 'trips', 0,
            'reason', '', 'cf', 0, 'hos', 0, 'rhead', 0, 'origin', '', 'missing', 1,
            'probes', live, 'fw', fw, 'rw', rw);
    END IF;
    IF p_n > 0 AND p_fwidth > 0 THEN
        fhead := floor(p_now / p_fwidth);
        SELECT jsonb_agg(coalesce(b.calls, 0) ORDER BY g.i) INTO fw
            FROM generate_series(0, p_n - 1) AS g(i)
            LEFT JOIN {schema}.{buckets} b
                ON b.name = p_name AND b.kind = 'f' AND b.idx = fhead - g.i;
    END IF;
    IF p_n > 0 AND (p_rcalls > 0 OR p_rwidth > 0) THEN
        IF p_rcalls > 0 THEN rhead := r.rate_head; ELSE rhead := floor(p_now / p_rwidth); END IF;
        SELECT jsonb_agg(jsonb_build_array(coalesce(b.calls, 0), coalesce(b.failures, 0),
                                           coalesce(b.slow, 0)) ORDER BY g.i) INTO rw
            FROM generate_series(0, p_n - 1) AS g(i)
            LEFT JOIN {schema}.{buckets} b
                ON b.name = p_name AND b.kind = 'r' AND b.idx = rhead - g.i;
    END IF;
    RETURN jsonb_build_object(
        'status', r.status, 'version', r.version, 'trips', r.trips, 'reason', r.reason,
        'cf', r.consecutive_failures, 'hos', r.half_open_successes, 'rhead', r.rate_head,
        'origin', r.origin, 'missing', 0, 'probes', live, 'fw', fw, 'rw', rw,
        'opened_ago', p_now - r.opened_at, 'retry_in', r.retry_at - p_now);
END;
$$;

-- Add a batch of outcomes and released permits; read the record back.
CREATE OR REPLACE FUNCTION {schema}.{flush}(
    p_name text, p_shift double precision, p_ttl double precision, p_version bigint,
    p_outcomes text, p_fwidth double precision, p_rwidth double precision, p_rcalls bigint,
    p_n integer, p_tokens text[], p_oks boolean[], p_origin text, p_seq bigint
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    now_ double precision := extract(epoch FROM clock_timestamp()) + p_shift;
    r {schema}.{table}%ROWTYPE;
    present boolean;
    is_current boolean;
    cf bigint;
    rhead bigint;
    fill bigint;
    fhead bigint := 0;
    thead bigint := 0;
    letter text;
    failed integer;
    slow integer;
    bucket bigint;
    b_calls bigint := 0;
    b_failures bigint := 0;
    b_slow bigint := 0;
    f_count bigint := 0;
    successes integer;
    wrote boolean := false;
    i integer;
BEGIN
    IF p_version = 0 AND length(p_outcomes) > 0 THEN
        INSERT INTO {schema}.{table} (name, expires_at) VALUES (p_name, now_ + p_ttl)
            ON CONFLICT (name) DO NOTHING;
    END IF;
    SELECT * INTO r FROM {schema}.{table} WHERE name = p_name FOR UPDATE;
    present := FOUND;
    DELETE FROM {schema}.{probes} WHERE name = p_name AND lease_until <= now_;
    is_current := coalesce(r.version, 0) = p_version;
    -- A batch resent after a lost answer counts once: the last seq applied per origin
    -- (this generation; at most 1,024 origins, then it starts remembering anew).
    IF p_seq > 0 AND present AND is_current AND length(p_outcomes) > 0 THEN
        IF coalesce((r.batches ->> p_origin)::bigint, 0) >= p_seq THEN
            p_outcomes := '';
        ELSE
            UPDATE {schema}.{table} SET batches = (CASE
                    WHEN NOT (r.batches ? p_origin)
                         AND (SELECT count(*) FROM jsonb_object_keys(r.batches)) >= 1024
                    THEN '{{}}'::jsonb ELSE r.batches END)
                || jsonb_build_object(p_origin, p_seq)
                WHERE name = p_name;
        END IF;
    END IF;
    IF present AND is_current AND r.status = 'closed' AND length(p_outcomes) > 0 THEN
        cf := r.consecutive_failures;
        rhead := r.rate_head;
        IF p_fwidth > 0 THEN fhead := floor(now_ / p_fwidth); END IF;
        IF p_rwidth > 0 THEN thead := floor(now_ / p_rwidth); END IF;
        fill := 0;
        IF p_rcalls > 0 THEN
            SELECT coalesce(max(calls), 0) INTO fill FROM {schema}.{buckets}
                WHERE name = p_name AND kind = 'r' AND idx = rhead;
        END IF;
        IF p_rcalls > 0 THEN bucket := rhead; ELSE bucket := thead; END IF;
        -- One pass over the letters (substr(s, i, 1) would restart at the front each time).
        FOREACH letter IN ARRAY string_to_array(p_outcomes, NULL) LOOP
            failed := CASE WHEN letter IN ('f', 'F') THEN 1 ELSE 0 END;
            slow := CASE WHEN letter IN ('S', 'F') THEN 1 ELSE 0 END;
            IF failed = 1 THEN cf := cf + 1; ELSE cf := 0; END IF;
            f_count := f_count + failed;
            IF p_rcalls > 0 AND fill >= p_rcalls THEN
                IF b_calls > 0 THEN
                    INSERT INTO {schema}.{buckets} AS b (name, kind, idx, calls, failures, slow)
                        VALUES (p_name, 'r', bucket, b_calls, b_failures, b_slow)
                        ON CONFLICT (name, kind, idx) DO UPDATE SET
                            calls = b.calls + EXCLUDED.calls,
                            failures = b.failures + EXCLUDED.failures,
                            slow = b.slow + EXCLUDED.slow;
                END IF;
                rhead := rhead + 1;
                bucket := rhead;
                fill := 0;
                b_calls := 0; b_failures := 0; b_slow := 0;
            END IF;
            fill := fill + 1;
            b_calls := b_calls + 1;
            b_failures := b_failures + failed;
            b_slow := b_slow + slow;
        END LOOP;
        IF (p_rcalls > 0 OR p_rwidth > 0) AND b_calls > 0 THEN
            INSERT INTO {schema}.{buckets} AS b (name, kind, idx, calls, failures, slow)
                VALUES (p_name, 'r', bucket, b_calls, b_failures, b_slow)
                ON CONFLICT (name, kind, idx) DO UPDATE SET
                    calls = b.calls + EXCLUDED.calls,
                    failures = b.failures + EXCLUDED.failures,
                    slow = b.slow + EXCLUDED.slow;
        END IF;
        IF p_fwidth > 0 AND f_count > 0 THEN
            INSERT INTO {schema}.{buckets} AS b (name, kind, idx, calls, failures, slow)
                VALUES (p_name, 'f', fhead, f_count, f_count, 0)
                ON CONFLICT (name, kind, idx) DO UPDATE SET
                    calls = b.calls + EXCLUDED.calls,
                    failures = b.failures + EXCLUDED.failures;
        END IF;
        -- Buckets that left every window go: a breaker never keeps more than its rings.
        DELETE FROM {schema}.{buckets} WHERE name = p_name AND (
            (kind = 'f' AND idx < fhead - p_n + 1)
            OR (kind = 'r' AND idx < (CASE WHEN p_rcalls > 0 THEN rhead ELSE thead END) - p_n + 1));
        UPDATE {schema}.{table} SET consecutive_failures = cf, rate_head = rhead
            WHERE name = p_name;
        wrote := true;
    END IF;
    successes := coalesce(r.half_open_successes, 0);
    IF p_tokens IS NOT NULL THEN
        FOR i IN 1 .. coalesce(array_length(p_tokens, 1), 0) LOOP
            DELETE FROM {schema}.{probes} WHERE name = p_name AND token = p_tokens[i];
            IF FOUND AND present AND is_current AND r.status = 'half_open' AND p_oks[i] THEN
                successes := successes + 1;
                wrote := true;
            END IF;
        END LOOP;
    END IF;
    IF present AND is_current AND successes <> r.half_open_successes THEN
        UPDATE {schema}.{table} SET half_open_successes = successes WHERE name = p_name;
    END IF;
    -- A breaker some process still flushes or refreshes is in use: its row stays.
    IF present THEN
        UPDATE {schema}.{table} SET expires_at = now_ + p_ttl WHERE name = p_name;
    END IF;
    RETURN {schema}.{record}(p_name, now_, p_fwidth, p_rwidth, p_rcalls, p_n);
END;
$$;

-- Compare-and-set a transition on the version (or force it), then notify.
CREATE OR REPLACE FUNCTION {schema}.{propose}(
    p_name text, p_shift double precision, p_ttl double precision, p_expected bigint,
    p_force boolean, p_status text, p_version bigint, p_trips integer, p_reason text,
    p_opened_ago double precision, p_open_for double precision, p_origin text,
    p_channel text
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    now_ double precision := extract(epoch FROM clock_timestamp()) + p_shift;
    r {schema}.{table}%ROWTYPE;
    stored bigint;
    v bigint := p_version;
    rec jsonb;
BEGIN
    INSERT INTO {schema}.{table} (name, expires_at) VALUES (p_name, now_ + p_ttl)
        ON CONFLICT (name) DO NOTHING;
    SELECT * INTO r FROM {schema}.{table} WHERE name = p_name FOR UPDATE;
    stored := r.version;
    IF NOT p_force AND stored <> p_expected THEN
        RETURN jsonb_build_array(0, {schema}.{record}(p_name, now_, 0, 0, 0, 0));
    END IF;
    IF p_force THEN v := greatest(stored + 1, p_version); END IF;
    UPDATE {schema}.{table} SET status = p_status, version = v, trips = p_trips,
        reason = p_reason, opened_at = now_ - p_opened_ago, retry_at = now_ + p_open_for,
        consecutive_failures = 0, half_open_successes = 0, rate_head = 0,
        origin = p_origin, batches = '{{}}'::jsonb, expires_at = now_ + p_ttl
        WHERE name = p_name;
    DELETE FROM {schema}.{buckets} WHERE name = p_name;
    DELETE FROM {schema}.{probes} WHERE name = p_name;
    rec := {schema}.{record}(p_name, now_, 0, 0, 0, 0);
    PERFORM pg_notify(p_channel, (rec || jsonb_build_object('key', md5(p_name)))::text);
    RETURN jsonb_build_array(1, rec);
END;
$$;

-- Take a half-open permit with a lease on the server's clock.
CREATE OR REPLACE FUNCTION {schema}.{acquire}(
    p_name text, p_shift double precision, p_ttl double precision, p_version bigint,
    p_limit integer, p_lease double precision, p_token text
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    now_ double precision := extract(epoch FROM clock_timestamp()) + p_shift;
    r {schema}.{table}%ROWTYPE;
    live integer;
BEGIN
    SELECT * INTO r FROM {schema}.{table} WHERE name = p_name FOR UPDATE;
    IF NOT FOUND OR r.status <> 'half_open' OR r.version <> p_version THEN
        RETURN jsonb_build_array(0, {schema}.{record}(p_name, now_, 0, 0, 0, 0));
    END IF;
    DELETE FROM {schema}.{probes} WHERE name = p_name AND lease_until <= now_;
    SELECT count(*) INTO live FROM {schema}.{probes} WHERE name = p_name;
    IF live >= p_limit THEN
        RETURN jsonb_build_array(0, {schema}.{record}(p_name, now_, 0, 0, 0, 0));
    END IF;
    INSERT INTO {schema}.{probes} (name, token, lease_until)
        VALUES (p_name, p_token, now_ + p_lease);
    UPDATE {schema}.{table} SET expires_at = now_ + p_ttl WHERE name = p_name;
    RETURN jsonb_build_array(1, {schema}.{record}(p_name, now_, 0, 0, 0, 0));
END;
$$;

-- Remove breakers nobody wrote to for their TTL (with their buckets and permits).
CREATE OR REPLACE FUNCTION {schema}.{sweep}(p_shift double precision, p_limit integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    now_ double precision := extract(epoch FROM clock_timestamp()) + p_shift;
    gone text[];
BEGIN
    SELECT array_agg(name) INTO gone FROM (
        SELECT name FROM {schema}.{table} WHERE expires_at < now_
        ORDER BY expires_at LIMIT p_limit FOR UPDATE SKIP LOCKED) AS expired;
    IF gone IS NULL THEN RETURN 0; END IF;
    DELETE FROM {schema}.{buckets} WHERE name = ANY (gone);
    DELETE FROM {schema}.{probes} WHERE name = ANY (gone);
    DELETE FROM {schema}.{table} WHERE name = ANY (gone);
    RETURN array_length(gone, 1);
END;
$$;
"""


def quote(identifier: str) -> str:
    """Double-quote an identifier the storage has validated."""
    return '"' + identifier.replace('"', '""') + '"'


def names(schema: str, table: str) -> dict[str, str]:
    """The quoted names of every object the storage creates."""
    return {
        "schema": quote(schema),
        "table": quote(table),
        "meta": quote(f"{table}_meta"),
        "buckets": quote(f"{table}_buckets"),
        "probes": quote(f"{table}_probes"),
        "expires_index": quote(f"{table}_expires_at"),
        "record": quote(f"{table}_record"),
        "flush": quote(f"{table}_flush"),
        "propose": quote(f"{table}_propose"),
        "acquire": quote(f"{table}_acquire"),
        "sweep": quote(f"{table}_sweep"),
    }


def ddl(schema: str, table: str) -> str:
    """The SQL that creates (or upgrades in place) the storage's schema."""
    return _TEMPLATE.format(version=SCHEMA_VERSION, **names(schema, table))
