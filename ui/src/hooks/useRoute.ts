import { useCallback, useEffect, useState } from 'react';

/** Where the console is: `#/users/12` → { section: 'users', id: '12' }. */
export interface Route {
  section: string;
  id: string | null;
}

function parse(hash: string): Route {
  const parts = hash.replace(/^#\/?/, '').split('/').filter(Boolean);
  return { section: parts[0] ?? '', id: parts[1] ?? null };
}

/** The route in the address bar's fragment, so reloads and links keep the screen. */
export function useRoute(): [Route, (to: string) => void] {
  const [route, setRoute] = useState<Route>(() => parse(window.location.hash));
  useEffect(() => {
    const onChange = () => setRoute(parse(window.location.hash));
    window.addEventListener('hashchange', onChange);
    return () => window.removeEventListener('hashchange', onChange);
  }, []);
  const navigate = useCallback((to: string) => {
    window.location.hash = to.startsWith('#') ? to : `#${to}`;
  }, []);
  return [route, navigate];
}
