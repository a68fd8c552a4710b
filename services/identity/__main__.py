from services.identity.app import create_app
from services.identity.settings import IdentitySettings
from shared.serve import serve

serve(IdentitySettings, create_app)
