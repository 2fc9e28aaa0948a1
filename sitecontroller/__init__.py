"""sitecontroller"""
