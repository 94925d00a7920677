-- In a cluster: the highest lease number each service's owner has written with. A
-- write that carries a lower one comes from an owner that another node has replaced,
-- and is refused.
CREATE TABLE service_fence (
    service TEXT PRIMARY KEY,
    token BIGINT NOT NULL
);
