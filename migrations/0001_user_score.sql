-- User scores for the leaderboard service. Written in the SQL that both SQLite and
-- PostgreSQL accept, so one set of migrations serves both stores. Usernames are kept to
-- 255 characters, which any unique index of either can hold.
CREATE TABLE user_score (
    id UUID PRIMARY KEY,
    username TEXT NOT NULL UNIQUE CHECK (length(username) BETWEEN 1 AND 255),
    score BIGINT NOT NULL,
    joined TIMESTAMP NOT NULL,
    inserted_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
