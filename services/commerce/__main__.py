from services.commerce.app import create_app
from services.commerce.settings import CommerceSettings
from shared.serve import serve

serve(CommerceSettings, create_app)
