"""certificates.k8s.io controllers (upstream ``pkg/controller/certificates``): the signers
(`signer`, ``--controllers`` name ``csrsigning``), the node client auto-approver (`approver`,
``csrapproving``) and the cleaner (`cleaner`, ``csrcleaner``)."""
