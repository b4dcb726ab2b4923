"""Stripe Checkout payments: checkout sessions, verified webhooks, reconciliation and refunds.

Every decision about an order or a payment is made by the `billing` functions in PostgreSQL (run as
`app_payments`); this package only talks to Stripe and moves the answers into those functions.
"""

from gateway.payments.config import PaymentSettings
from gateway.payments.service import AuthContext, PaymentService

__all__ = ["AuthContext", "PaymentService", "PaymentSettings"]
