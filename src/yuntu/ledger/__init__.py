"""The ledger: one double-entry book of money (CNY fen) and points for every product."""
