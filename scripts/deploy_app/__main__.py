"""``python -m scripts.deploy_app -i INPUT -o OUTPUT -m MODELS``: run the MONAI Deploy application."""

from scripts.deploy_app.app import OutcomeApp

if __name__ == "__main__":
    OutcomeApp().run()
