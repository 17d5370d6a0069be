-- Slack: the message each job got in each Slack channel (so resolutions
-- update it), and the signatures of interactions already handled (so a
-- replayed request is refused on every replica).

CREATE TABLE slack_messages (
    job_id     TEXT NOT NULL,
    channel    TEXT NOT NULL,               -- the gavel channel name
    slack_channel TEXT NOT NULL,            -- Slack's channel id, as chat.postMessage answered
    ts         TEXT NOT NULL,               -- Slack's message timestamp (its id)
    PRIMARY KEY (job_id, channel)
);

CREATE TABLE slack_seen (
    signature  TEXT PRIMARY KEY,
    seen_at    INTEGER NOT NULL
);
