-- Products and their stock. The CHECK makes overselling impossible even if a
-- reservation ever raced another: SQLite refuses the update instead.
CREATE TABLE products (
    sku       TEXT PRIMARY KEY,
    name      TEXT NOT NULL,
    initial   INTEGER NOT NULL CHECK (initial >= 0),
    available INTEGER NOT NULL CHECK (available >= 0)
);

-- One row per order the fulfilment workers decided on. The primary key is what
-- makes a redelivered order reserve stock only once.
CREATE TABLE reservations (
    order_id   TEXT PRIMARY KEY,
    sku        TEXT NOT NULL REFERENCES products (sku),
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    outcome    TEXT NOT NULL CHECK (outcome IN ('reserved', 'out_of_stock')),
    decided_at INTEGER NOT NULL
);

-- What the API reports for each order. `stage` only ever grows, so a late or
-- repeated update can never move an order back to an earlier status.
CREATE TABLE orders (
    id         TEXT PRIMARY KEY,
    sku        TEXT NOT NULL,
    quantity   INTEGER NOT NULL,
    customer   TEXT NOT NULL,
    status     TEXT NOT NULL,
    stage      INTEGER NOT NULL,
    reason     TEXT,
    updated_at INTEGER NOT NULL
);

CREATE INDEX orders_by_stage ON orders (stage);
