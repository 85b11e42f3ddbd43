from django.db import models


class BrokerEpoch(models.Model):
    """The broker's epoch (a token it keeps beside the queues) as each sweeper
    last saw it: a different token means the broker lost its data since that
    sweeper's last look (apps.core.broker)."""

    name = models.CharField(max_length=50, primary_key=True)
    token = models.CharField(max_length=32)
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name}: {self.token}"
