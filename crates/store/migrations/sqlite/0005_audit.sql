-- The audit trail: security events, kept for LATCHKEY_AUDIT_RETENTION. No foreign keys: an
-- account's events outlive the account (its deletion is one of them). Times in milliseconds
-- since the Unix epoch; email as the account stores it, or as typed for unknown addresses.
CREATE TABLE audit_events (
    id          BLOB PRIMARY KEY NOT NULL,
    at          INTEGER NOT NULL,
    tenant_id   BLOB NOT NULL,
    user_id     BLOB,
    email       TEXT,
    kind        TEXT NOT NULL,
    surface     TEXT NOT NULL,
    ip          TEXT,
    user_agent  TEXT,
    detail      TEXT
);
CREATE INDEX audit_events_tenant_at ON audit_events (tenant_id, at);
CREATE INDEX audit_events_user_at ON audit_events (user_id, at);
CREATE INDEX audit_events_kind_at ON audit_events (kind, at);
CREATE INDEX audit_events_at ON audit_events (at);
