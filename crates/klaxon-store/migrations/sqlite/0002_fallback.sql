-- Fallback chains (PRODUCT.md §7): a delivery handed to another channel says where it went,
-- and the new delivery says which one it replaces, so the history reads both ways.
ALTER TABLE deliveries ADD COLUMN fallback_of TEXT;
ALTER TABLE deliveries ADD COLUMN fell_back_to TEXT;
