"""The API's routes, one router per domain; :func:`kb_qa.api.app.create_app` includes them in order."""

from kb_qa.api.routes import chat, jobs, knowledge_bases, openai, search, service

ROUTERS = [
    service.router,
    knowledge_bases.router,
    jobs.router,
    search.router,
    chat.router,
]
AFTER_LEGACY = [openai.router]  # registered after the drop-in routes and the page, as before

__all__ = ["AFTER_LEGACY", "ROUTERS"]
