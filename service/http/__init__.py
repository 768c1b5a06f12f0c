"""The HTTP adapters over the dataplane: middlewares, error handlers and the routers of each
way in (service/http/routes/). Never imports the process (service.bento, service.cli).
"""
