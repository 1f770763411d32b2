"""The attestation agent: one KBS client (and so one ephemeral TEE key and one cached token)
per broker, chosen by the host part of the resource URI.

:meth:`AttestationAgent.from_config` is where a guest's attesters are chosen, the CPU TEE's
and the devices' (GPUs), for ``custodes run`` and ``custodes guest api`` alike: whatever a pod
runs, its GPUs are attested with its CPU.

The TEE key never leaves this object; :meth:`AttestationAgent.token_with_key` hands it out only
for upstream's REST ``/aa/token`` feature, which must be enabled explicitly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from custodes.guest.attester.base import Attester
from custodes.guest.attester.composite import additional_evidence
from custodes.guest.attester.select import Platform, select_attester, select_device_attesters
from custodes.guest.config import BrokerConfig, GuestConfig
from custodes.guest.kbs_client import KbsClient, Token
from custodes.protocol.resource import ResourceUri
from custodes.types.secret import Secret

logger = logging.getLogger(__name__)


class AttestationAgent:
    def __init__(
        self,
        config: GuestConfig,
        attester: Attester,
        *,
        init_data: str | None = None,
        device_attesters: Sequence[Attester] = (),
    ) -> None:
        """``device_attesters`` (GPUs) go with every attestation as additional evidence."""
        self.config = config
        self.attester = attester
        self.device_attesters = tuple(device_attesters)
        self.init_data = init_data
        self._clients: dict[str, KbsClient] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(
        cls, config: GuestConfig, *, init_data: str | None = None, platform: Platform | None = None
    ) -> AttestationAgent:
        """The agent of a guest configured by ``config``: the attester it names (``tee``) or
        the detected one, and the device attesters of its ``gpu`` mode. ``platform`` replaces
        the real device paths (tests)."""
        platform = platform or Platform()
        attester = select_attester(config.tee, tcti=config.tcti, platform=platform)
        devices = select_device_attesters(config.gpu, nvidia_device=platform.nvidia_device)
        return cls(config, attester, init_data=init_data, device_attesters=devices)

    def additional_tees(self) -> list[str]:
        """The device TEEs attested next to the CPU (upstream's ``GetAdditionalTees``)."""
        return [str(device.tee) for device in self.device_attesters]

    def additional_evidence(self, report_data: bytes) -> str:
        """The devices' evidence over ``report_data``, as the handshake sends it (upstream's
        ``GetAdditionalEvidence``): ``""`` without devices."""
        return additional_evidence(self.device_attesters, report_data)

    def client(self, broker: BrokerConfig) -> KbsClient:
        with self._lock:
            client = self._clients.get(broker.name)
            if client is None:
                client = KbsClient(
                    broker.url,
                    self.attester,
                    key_kind=self.config.key_type,
                    init_data=self.init_data,
                    ca_file=broker.cacert,
                    device_attesters=self.device_attesters,
                    policy_selector=broker.policy_selector,
                )
                self._clients[broker.name] = client
            return client

    def client_for(self, uri: ResourceUri) -> KbsClient:
        return self.client(self.config.broker_for_host(uri.host))

    def token(self, broker: BrokerConfig | None = None) -> Token:
        """The cached token of ``broker`` (default broker if ``None``), attesting if needed."""
        return self.client(broker or self.config.broker_for_host(None)).token()

    def token_with_key(self, broker: BrokerConfig | None = None) -> tuple[Token, Secret[bytes]]:
        """Upstream's ``GetToken``: the token and the TEE private key (PEM). Only the REST API
        with the attestation feature calls this."""
        client = self.client(broker or self.config.broker_for_host(None))
        token = client.token()
        logger.warning("handing the TEE private key to a local caller (REST /aa/token)")
        return token, client.key.private_pem()

    def handshakes(self) -> int:
        return sum(c.handshakes for c in self._clients.values())

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
