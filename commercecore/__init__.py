"""CommerceCore DBX's command line and the tools around the database: the sqitch-compatible deployer
(`deploy`), the embedded cluster, dev stack and demo seed (`local`), backups, restores, PITR, reports and
jobs (`ops`), and the Stripe stand-in for tests and demo mode (`standin`, an optional extra)."""
