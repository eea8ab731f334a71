"""The deployment files checked by the real validators, installed by the project itself.

``python -m deploy.validate`` (``make validate``, run by ``make test``) fetches or builds
kubeconform, Kubernetes' JSON schemas, the CRD schemas of every operator deploy/k8s uses and a
docker-compose binary into ``.stack/downloads/validate/`` (toolchain.py), then validates
deploy/k8s with ``kubeconform -strict`` and docker-compose.yml with ``docker-compose config``
(checks.py). tests/unit/test_k8s_manifests.py and tests/unit/test_compose.py run the same checks.
"""
