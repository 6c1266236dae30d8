"""fleet_server"""
