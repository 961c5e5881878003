-- The `realtime` surface's profile records (API.md `realtime`, seed 000): one per user, keyed
-- by the user and carrying the seed's keys (email, cogId) and its loggedIn flag. Tokens are
-- never stored here. Deleted with the user.

CREATE TABLE realtime_profiles (
    tenant_id    BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id      BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    identity_id  TEXT NOT NULL,
    username     TEXT NOT NULL,
    email        TEXT NOT NULL,
    logged_in    INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX realtime_profiles_identity_id ON realtime_profiles (tenant_id, identity_id);
