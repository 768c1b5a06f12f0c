"""The protocol-neutral core: the dataplane, models, modalities, batching and admission.
Never imports the HTTP layer (service.http) or the process (service.bento, service.cli).
"""
