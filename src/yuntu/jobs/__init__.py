"""Durable jobs in the application database: enqueue, claim, lease, retry, cron, workers."""
